//! The converter: reads the fenced, well-formed HTML of a rendered message once, keeping
//! a stack of open tags and values, and writes the dialect's markup.

use super::special::{google_special_text, slack_special_text, special_end};
use super::text::{is_fence, TextContext, ValueText};
use super::{
    Dialect, JOINER, MAX_DEPTH, MAX_LIST_INDENT, MENTIONED_START, MENTION_END, MENTION_START, VALUE_END, VALUE_START,
};
use crate::rich_text::decode_entities;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fmt {
    Bold,
    Italic,
    Strike,
    Code,
    Pre,
}

#[derive(Debug)]
pub(super) enum Kind {
    Root,
    Format(Fmt),
    Heading,
    Link(Option<String>),
    Skip,
}

#[derive(Debug)]
pub(super) struct Frame {
    kind: Kind,
    tag: String,
    buf: String,
}

pub(super) struct Converter {
    dialect: Dialect,
    frames: Vec<Frame>,
    /// Open lists: `None` bulleted, `Some(n)` numbered, next number `n`.
    lists: Vec<Option<u32>>,
    /// The values being read, innermost last.
    values: Vec<OpenValue>,
}

/// A value being read: what was open when it started (its HTML cannot close what the
/// user opened, and what it leaves open is closed at its end), and whose it is.
pub(super) struct OpenValue {
    frames: usize,
    lists: usize,
    mentioned: bool,
}

impl Converter {
    pub(super) fn new(dialect: Dialect) -> Self {
        Converter {
            dialect,
            frames: vec![Frame { kind: Kind::Root, tag: String::new(), buf: String::new() }],
            lists: Vec::new(),
            values: Vec::new(),
        }
    }

    pub(super) fn run(&mut self, input: &str) {
        let mut text_start = 0;
        let mut i = 0;
        while i < input.len() {
            let rest = &input[i..];
            let c = rest.chars().next().unwrap_or_default();
            let consumed = match c {
                VALUE_START | MENTIONED_START => {
                    self.text(&input[text_start..i]);
                    let content = rest[c.len_utf8()..].split(VALUE_END).next().unwrap_or("");
                    let mentioned = c == MENTIONED_START;
                    if self.dialect.guard_value_start(&self.tail(8), content) {
                        self.top().push(JOINER);
                    }
                    self.values.push(OpenValue { frames: self.frames.len(), lists: self.lists.len(), mentioned });
                    Some(c.len_utf8())
                }
                VALUE_END => {
                    self.text(&input[text_start..i]);
                    self.end_value();
                    Some(c.len_utf8())
                }
                MENTION_START => {
                    self.text(&input[text_start..i]);
                    let end = rest.find(MENTION_END).unwrap_or(rest.len());
                    let id = &rest[c.len_utf8()..end];
                    let mention = if self.dialect.is_slack() { format!("<@{id}>") } else { format!("@{id}") };
                    self.top().push_str(&mention);
                    Some((end + MENTION_END.len_utf8()).min(rest.len()))
                }
                '<' => self.markup(rest, &input[text_start..i]),
                _ => None,
            };
            match consumed {
                Some(n) => {
                    i += n;
                    text_start = i;
                }
                None => i += c.len_utf8(),
            }
        }
        self.text(&input[text_start..]);
        while self.frames.len() > 1 {
            self.pop();
        }
    }

    /// A `<` at the start of `rest`: a tag, a comment, or (in Slack, in the user's own
    /// text) Slack markup such as `<!here>` or `<https://…|label>`. `pending` is the
    /// text before it, flushed when the `<` turns out to be markup.
    pub(super) fn markup(&mut self, rest: &str, pending: &str) -> Option<usize> {
        if rest.starts_with("<!--") {
            self.text(pending);
            return Some(rest.find("-->").map_or(rest.len(), |e| e + 3));
        }
        let after = &rest[1..];
        if self.dialect.is_slack() && self.values.is_empty() {
            // The link may be a placeholder: `<$this->url()$|Open>`.
            let probe = after.trim_start_matches(is_fence);
            let slack_special = probe.starts_with(['@', '#'])
                || probe.strip_prefix('!').is_some_and(|s| s.starts_with(|c: char| c.is_ascii_lowercase()))
                || ["http://", "https://", "mailto:", "tel:"].iter().any(|p| probe.starts_with(p));
            if slack_special {
                let end = special_end(after)?;
                let literal = slack_special_text(&after[..end])?;
                self.text(pending);
                if self.dialect == Dialect::Slack || !literal.starts_with(['h', 'm', 't']) {
                    self.top().push_str(&format!("<{literal}>"));
                } else {
                    let shown = literal.split_once('|').map_or(literal.as_str(), |(_, label)| label);
                    self.top().push_str(shown);
                }
                return Some(end + 2);
            }
        }
        if self.dialect == Dialect::GoogleChat && self.values.is_empty() {
            // Google Chat's own `<users/…>` mentions and `<https://…|text>` links, as the
            // user wrote them; a placeholder may give a numeric user id and nothing else.
            let lower = after.get(..8).unwrap_or(after).to_ascii_lowercase();
            if ["users/", "http://", "https://"].iter().any(|p| lower.starts_with(p)) {
                // Anything else that looks like one is text, not an HTML tag.
                let end = special_end(after)?;
                let literal = google_special_text(&after[..end])?;
                self.text(pending);
                self.top().push_str(&format!("<{literal}>"));
                return Some(end + 2);
            }
        }
        // `<!` opens a comment or a declaration only when the user wrote what follows.
        let starts_tag = after.starts_with(|c: char| c.is_ascii_alphabetic())
            || after.strip_prefix('/').is_some_and(|s| s.starts_with(|c: char| c.is_ascii_alphabetic()))
            || after.strip_prefix('!').is_some_and(|s| s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '['));
        if !starts_tag {
            return None;
        }
        let end = tag_end(after)?;
        self.text(pending);
        let tag: String = after[..end].chars().filter(|c| !is_fence(*c)).collect();
        self.tag(&tag);
        Some(end + 2)
    }

    pub(super) fn top(&mut self) -> &mut String {
        &mut self.frames.last_mut().expect("the root frame is never popped").buf
    }

    pub(super) fn skipping(&self) -> bool {
        self.frames.iter().any(|f| matches!(f.kind, Kind::Skip))
    }

    pub(super) fn has_fmt(&self, f: Fmt) -> bool {
        self.frames.iter().any(|fr| matches!(fr.kind, Kind::Format(g) if g == f))
    }

    pub(super) fn text(&mut self, raw: &str) {
        if raw.is_empty() || self.skipping() {
            return;
        }
        let text = decode_entities(&raw.replace("\r\n", "\n").replace('\r', "\n"));
        let value = self.values.last().map(|v| ValueText { mentioned: v.mentioned });
        let in_code = self.has_fmt(Fmt::Code) || self.has_fmt(Fmt::Pre);
        let before = self.tail(8);
        let dialect = self.dialect;
        let top = self.top();
        dialect.push_text(top, &text, TextContext { value, in_code, before: &before });
    }

    /// The last `n` characters written, across open frames.
    pub(super) fn tail(&self, n: usize) -> String {
        let mut rev: Vec<char> = Vec::with_capacity(n);
        for f in self.frames.iter().rev() {
            for c in f.buf.chars().rev() {
                if rev.len() == n {
                    return rev.iter().rev().collect();
                }
                rev.push(c);
            }
        }
        rev.iter().rev().collect()
    }

    pub(super) fn at_line_start(&self) -> bool {
        for f in self.frames.iter().rev() {
            if let Some(c) = f.buf.chars().next_back() {
                return c == '\n';
            }
        }
        true
    }

    pub(super) fn line_break(&mut self) {
        if !self.at_line_start() {
            self.top().push('\n');
        }
    }

    pub(super) fn push_frame(&mut self, kind: Kind, tag: &str) {
        // Deeper nesting adds nothing to show and would cost time on hostile input.
        if self.frames.len() < MAX_DEPTH {
            self.frames.push(Frame { kind, tag: tag.to_string(), buf: String::new() });
        }
    }

    pub(super) fn tag(&mut self, source: &str) {
        if source.starts_with('!') || source.starts_with('?') {
            return;
        }
        let closing = source.starts_with('/');
        let body = source.trim_start_matches('/');
        let name: String =
            body.chars().take_while(|c| c.is_ascii_alphanumeric()).collect::<String>().to_ascii_lowercase();
        if closing {
            self.close(&name);
            return;
        }
        if self.skipping() {
            return;
        }
        let self_closing = body.trim_end().ends_with('/');
        match name.as_str() {
            "b" | "strong" => self.push_frame(Kind::Format(Fmt::Bold), &name),
            "i" | "em" | "cite" => self.push_frame(Kind::Format(Fmt::Italic), &name),
            "s" | "strike" | "del" => self.push_frame(Kind::Format(Fmt::Strike), &name),
            "code" | "tt" | "kbd" | "samp" => self.push_frame(Kind::Format(Fmt::Code), &name),
            "pre" => {
                self.line_break();
                self.push_frame(Kind::Format(Fmt::Pre), &name);
            }
            "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => {
                self.line_break();
                self.push_frame(Kind::Heading, &name);
            }
            "a" if !self_closing => {
                let href = attribute(body, "href").map(|h| decode_entities(&h)).filter(|h| {
                    let lower = h.trim_start().to_ascii_lowercase();
                    ["http://", "https://", "mailto:"].iter().any(|p| lower.starts_with(p))
                });
                self.push_frame(Kind::Link(href.map(|h| h.trim().to_string())), &name);
            }
            "script" | "style" | "head" | "title" | "template" if !self_closing => self.push_frame(Kind::Skip, &name),
            "br" => self.top().push('\n'),
            "p" | "div" | "blockquote" | "table" | "tr" | "section" | "article" | "header" | "footer" | "hr" | "dl"
            | "dt" | "dd" => self.line_break(),
            "ul" => {
                self.line_break();
                self.lists.push(None);
            }
            "ol" => {
                self.line_break();
                let start = attribute(body, "start").and_then(|s| s.trim().parse().ok()).unwrap_or(1);
                self.lists.push(Some(start));
            }
            "li" => {
                self.line_break();
                let depth = (self.lists.len().max(1) - 1).min(MAX_LIST_INDENT);
                let marker = match self.lists.last_mut() {
                    Some(Some(n)) => {
                        let shown = *n;
                        *n = n.saturating_add(1);
                        format!("{shown}. ")
                    }
                    _ => self.dialect.bullet().to_string(),
                };
                let indent = "  ".repeat(depth);
                self.top().push_str(&format!("{indent}{marker}"));
            }
            "td" | "th" if !self.at_line_start() => self.top().push_str(" | "),
            _ => {}
        }
    }

    pub(super) fn close(&mut self, name: &str) {
        let (frame_floor, list_floor) = self.values.last().map_or((1, 0), |v| (v.frames, v.lists));
        if let Some(pos) = self.frames.iter().rposition(|f| f.tag == name) {
            if pos >= frame_floor.max(1) {
                while self.frames.len() > pos {
                    self.pop();
                }
            }
            return;
        }
        if self.skipping() {
            return;
        }
        match name {
            "ul" | "ol" => {
                if self.lists.len() > list_floor {
                    self.lists.pop();
                }
                self.line_break();
                // Teams joins list items with one line break and everything else with
                // two: a blank line keeps the next list or paragraph apart.
                if self.lists.is_empty() && matches!(self.dialect, Dialect::Teams | Dialect::TeamsConnector) {
                    self.top().push('\n');
                }
            }
            "p" | "div" | "blockquote" | "table" | "tr" | "li" | "section" | "article" | "header" | "footer" | "dl"
            | "dt" | "dd" => self.line_break(),
            _ => {}
        }
    }

    pub(super) fn end_value(&mut self) {
        let Some(OpenValue { frames, lists, .. }) = self.values.pop() else { return };
        while self.frames.len() > frames.max(1) {
            self.pop();
        }
        self.lists.truncate(lists);
    }

    /// Closes the innermost frame, writing its content into its parent.
    pub(super) fn pop(&mut self) {
        let Some(frame) = self.frames.pop() else { return };
        let dialect = self.dialect;
        let in_code = self.has_fmt(Fmt::Code) || self.has_fmt(Fmt::Pre);
        let out = match frame.kind {
            Kind::Root => frame.buf,
            Kind::Skip => String::new(),
            Kind::Format(f) => {
                let nested = self.has_fmt(f) || (in_code && f != Fmt::Pre);
                match dialect.mark(f).filter(|_| !nested) {
                    Some(fence) if f == Fmt::Pre => {
                        let content = frame.buf.trim_matches('\n');
                        if content.is_empty() {
                            String::new()
                        } else {
                            format!("{fence}\n{content}\n{fence}\n")
                        }
                    }
                    Some(mark) => wrap_lines(&frame.buf, mark),
                    None if f == Fmt::Pre => format!("{}\n", frame.buf.trim_matches('\n')),
                    None => frame.buf,
                }
            }
            Kind::Heading => {
                let mark = dialect.mark(Fmt::Bold).filter(|_| !self.has_fmt(Fmt::Bold) && !in_code);
                let content = match mark {
                    Some(m) => wrap_lines(&frame.buf, m),
                    None => frame.buf,
                };
                format!("{content}\n")
            }
            Kind::Link(href) => match href {
                Some(url) if !in_code => dialect.link(&url, &frame.buf),
                _ => frame.buf,
            },
        };
        self.top().push_str(&out);
    }

    pub(super) fn into_text(mut self) -> String {
        while self.frames.len() > 1 {
            self.pop();
        }
        self.frames.pop().map(|f| f.buf).unwrap_or_default()
    }
}

/// Wraps each non-blank line in `mark`, outside its surrounding spaces: mrkdwn and
/// Markdown emphasis neither spans lines nor starts or ends with a space.
pub(super) fn wrap_lines(content: &str, mark: &str) -> String {
    content
        .split('\n')
        .map(|line| {
            let core = line.trim();
            if core.is_empty() {
                return line.to_string();
            }
            let lead = &line[..line.len() - line.trim_start().len()];
            let trail = &line[line.trim_end().len()..];
            format!("{lead}{mark}{core}{mark}{trail}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Where a tag that starts after `<` ends (the index of its `>`), quotes respected.
pub(super) fn tag_end(after: &str) -> Option<usize> {
    let mut quote = None;
    for (i, c) in after.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '>') => return Some(i),
            (None, '<') => return None,
            _ => {}
        }
    }
    None
}

/// The value of attribute `name` in a tag's source (`a href="…" title=…`).
pub(super) fn attribute(tag: &str, name: &str) -> Option<String> {
    let mut rest = tag.trim_start_matches(|c: char| c.is_ascii_alphanumeric());
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == '/');
        if rest.is_empty() {
            return None;
        }
        let key_len = rest.find(|c: char| c.is_whitespace() || c == '=' || c == '/').unwrap_or(rest.len());
        let key = &rest[..key_len];
        rest = rest[key_len..].trim_start();
        let mut val = None;
        if let Some(after) = rest.strip_prefix('=') {
            let after = after.trim_start();
            let (v, tail) = match after.chars().next() {
                Some(q @ ('"' | '\'')) => {
                    let end = after[1..].find(q).map_or(after.len(), |e| e + 1);
                    (&after[1..end], after.get(end + 1..).unwrap_or(""))
                }
                _ => {
                    let end = after.find(char::is_whitespace).unwrap_or(after.len());
                    (&after[..end], &after[end..])
                }
            };
            val = Some(v.to_string());
            rest = tail;
        }
        if key.eq_ignore_ascii_case(name) {
            return val;
        }
        if key_len == 0 && val.is_none() {
            return None;
        }
    }
}
