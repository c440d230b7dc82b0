//! A rendered chat message to each service's markup.
//!
//! A message mixes three things: the text the user wrote in the action (which may use the
//! service's own markup, and HTML), HTML that placeholders bring (`$this->html(…)$`,
//! `$this->hyperlink()$`, HTML attributes), and plain values. The template renders values
//! through [`mark_value`], which fences each one between private-use characters and
//! HTML-escapes the plain ones, so [`convert`] sees well-formed HTML and knows which text
//! came from the object: that text is escaped for the target markup (a title holding
//! `*` or `<!channel>` stays literal), while the user's own markup is kept as written.
//!
//! Mentions come only from the template: what the user wrote (`<!here>`, `<@U…>`,
//! `<users/…>`, `@name`), a placeholder that is nothing but a user's id inside a mention
//! the user wrote (`<@$this->agent_id->slack_id$>`), or the values of `$mentioned->…$`,
//! which may name the mentioned contact (never a group: `<!channel>`, `@all`,
//! `<users/all>` stay text wherever they come from). Any other value is text whatever
//! surrounds it: the character before a placeholder cannot turn it into markup
//! (`<$this->site$|open>` with `!channel` is written `&lt;!channel|open&gt;`).

mod convert;
mod mention;
mod special;
#[cfg(test)]
mod tests;
mod text;

use super::{html, html_escape, Origin, ValueKind};
use convert::Converter;
use mention::protect_mentions;

const VALUE_START: char = '\u{E000}';
const VALUE_END: char = '\u{E001}';
const MENTION_START: char = '\u{E002}';
const MENTION_END: char = '\u{E003}';
/// Opens a value of `$mentioned->…$` (closed by [`VALUE_END`]).
const MENTIONED_START: char = '\u{E004}';
/// Placed after a character that would open a mention or a link (`@`, `#`, `<`) in a
/// value: invisible, not a space, and no service reads a mention across it.
const JOINER: char = '\u{2060}';
/// Group mentions: never from a value, not even a mentioned contact's.
const GROUP_MENTIONS: [&str; 4] = ["all", "here", "channel", "everyone"];
/// Open tags deeper than this are ignored.
const MAX_DEPTH: usize = 64;
/// Nested list items are indented by at most this many levels.
const MAX_LIST_INDENT: usize = 4;
/// Placed beside a formatting character from a value, it stops Slack from reading the
/// character as markup (mrkdwn has no escape character).
const ZWSP: char = '\u{200B}';

/// The markup a text is converted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Slack mrkdwn: `*bold*`, `_italic_`, `~strike~`, `<url|text>`, `<@U…>` mentions.
    Slack,
    /// Slack text without formatting (notification fallback); mentions kept.
    SlackPlain,
    /// The Markdown subset of Adaptive Card TextBlocks in Teams.
    Teams,
    /// Markdown of Teams connector cards (MessageCard), which also reads some HTML.
    TeamsConnector,
    /// Rocket.Chat markdown.
    RocketChat,
    /// Google Chat text: the user's markup dropped like [`Dialect::Plain`], and what
    /// Google Chat would read as formatting, a link or a mention in values neutralised.
    GoogleChat,
    /// Plain text: markup dropped, links as `text (url)`.
    Plain,
}

/// How a length is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// UTF-16 code units: never fewer than characters, so safe for "characters" limits.
    Utf16,
    /// Bytes once written as a JSON string (escapes included).
    JsonBytes,
}

impl Unit {
    pub fn of_char(self, c: char) -> usize {
        match self {
            Unit::Utf16 => c.len_utf16(),
            Unit::JsonBytes => match c {
                '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
                c if (c as u32) < 0x20 => 6,
                c => c.len_utf8(),
            },
        }
    }

    pub fn of(self, text: &str) -> usize {
        text.chars().map(|c| self.of_char(c)).sum()
    }
}

/// The template escape for chat messages: fences a substituted value (see the module
/// documentation). HTML values (`html(…)` of an HTML attribute, `head_html(…)`,
/// `hyperlink()`) stay HTML; every other value is text, HTML-escaped whatever it holds.
pub fn mark_value(value: &str, origin: Origin, kind: ValueKind) -> String {
    let clean: String = value.chars().filter(|c| !('\u{E000}'..='\u{E004}').contains(c)).collect();
    let inner = match kind {
        ValueKind::Text => html_escape(&clean),
        // The event's HTML is parsed as browsers do, so that the converter below only
        // ever reads well-formed markup.
        ValueKind::Html => html::normalise(&clean),
        ValueKind::OwnHtml => clean,
    };
    let start = if origin == Origin::Mentioned { MENTIONED_START } else { VALUE_START };
    format!("{start}{inner}{VALUE_END}")
}

/// [`mark_value`] for a plain-text value.
pub fn mark_text(value: &str, origin: Origin) -> String {
    mark_value(value, origin, ValueKind::Text)
}

/// A value shown on its own (a field, a name), converted like a placeholder's value.
pub fn value(text: &str, dialect: Dialect) -> String {
    if is_inert(text) {
        return text.to_string();
    }
    convert(&mark_text(text, Origin::Event), dialect)
}

/// Whether a value comes out of [`convert`] as it is, in every dialect: one line of letters,
/// digits, single spaces between words and punctuation that no dialect reads as markup, a
/// mention, a link or an entity. Most attribute values and labels are such (`R-000123`,
/// `Service Desk`, `2`), and converting each cost a parse of its fenced HTML; the property
/// test `inert_values_convert_to_themselves` holds this to what [`convert`] does.
fn is_inert(text: &str) -> bool {
    !text.is_empty()
        && !text.starts_with(' ')
        && !text.ends_with(' ')
        && !text.contains("  ")
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || b" -.,:;!?'()/+=%".contains(&b))
}

/// A value shown on its own in at most `max` (counted in `unit`): only its beginning is
/// converted when it is far longer than that, and the cut is always marked.
pub fn value_within(text: &str, max: usize, unit: Unit, dialect: Dialect) -> String {
    let cut = text.char_indices().nth(max.saturating_mul(4)).map(|(i, _)| i);
    let shown = truncate(&value(&text[..cut.unwrap_or(text.len())], dialect), max, unit, dialect);
    if cut.is_some() && !shown.ends_with('…') {
        // Room for the mark was not reserved when nothing was cut: make it.
        let mut shown = truncate(&shown, max.saturating_sub(unit.of("…")), unit, dialect);
        if !shown.ends_with('…') {
            shown.push('…');
        }
        return shown;
    }
    shown
}

/// A rendered message converted; when it comes out empty (every placeholder in it
/// was), `name()` (the object's name) instead, since the services refuse an empty one.
pub fn message(rendered: &str, dialect: Dialect, name: impl FnOnce() -> String) -> String {
    let text = convert(rendered, dialect);
    if text.trim().is_empty() {
        value(&name(), dialect)
    } else {
        text
    }
}

/// Characters of a rendered message that are converted at most: more than any service
/// shows (Slack's 40,000 in all is the most), so a huge attribute costs the same as a
/// long one; what is left out is marked with `…`.
const MAX_CONVERTED_CHARS: usize = 65_536;

/// Converts a rendered message (see the module documentation).
pub fn convert(rendered: &str, dialect: Dialect) -> String {
    if let Some((cut, _)) = rendered.char_indices().nth(MAX_CONVERTED_CHARS) {
        let mut text = convert(&rendered[..cut], dialect);
        if !text.ends_with('…') {
            text.push('…');
        }
        return text;
    }
    let protected;
    let input = if dialect.is_slack() {
        protected = protect_mentions(rendered);
        protected.as_str()
    } else {
        rendered
    };
    let mut c = Converter::new(dialect);
    c.run(input);
    finish(c.into_text(), dialect)
}

/// Cuts `text` to at most `max` (counted in `unit`), ending with `…`, without leaving
/// half a link, entity or escape behind.
pub fn truncate(text: &str, max: usize, unit: Unit, dialect: Dialect) -> String {
    if unit.of(text) <= max {
        return text.to_string();
    }
    const MARK: &str = "…";
    const FENCE: &str = "\n```";
    let budget = max.saturating_sub(unit.of(MARK) + unit.of(FENCE));
    let mut used = 0;
    let mut end = 0;
    for (i, c) in text.char_indices() {
        let n = unit.of_char(c);
        if used + n > budget {
            break;
        }
        used += n;
        end = i + c.len_utf8();
    }
    let mut kept = &text[..end];
    if dialect.is_slack() || dialect == Dialect::TeamsConnector {
        // `<…>` links and mentions, `&amp;` entities: never half of one.
        if let Some(open) = kept.rfind('<') {
            if !kept[open..].contains('>') {
                kept = &kept[..open];
            }
        }
        if let Some(amp) = kept.rfind('&') {
            if kept.len() - amp <= 8 && !kept[amp..].contains(';') {
                kept = &kept[..amp];
            }
        }
    }
    if dialect.is_markdown() {
        // `[text](url)` cut inside its URL.
        if let Some(open) = kept.rfind("](") {
            if !kept[open..].contains(')') {
                kept = kept[..open].rfind('[').map_or(&kept[..open], |b| &kept[..b]);
            }
        }
        // A lone trailing backslash would escape the ellipsis.
        let slashes = kept.len() - kept.trim_end_matches('\\').len();
        if slashes % 2 == 1 {
            kept = &kept[..kept.len() - 1];
        }
    }
    let kept = kept.trim_end_matches(ZWSP);
    let mut out = format!("{kept}{MARK}");
    if matches!(dialect, Dialect::Slack | Dialect::RocketChat) && kept.matches("```").count() % 2 == 1 {
        out.push_str(FENCE);
    }
    out
}

/// Tidies the converted text: no trailing spaces, at most one blank line in a row, no
/// blank lines around it; Teams needs a blank line for each line break outside lists.
fn finish(text: String, dialect: Dialect) -> String {
    let lines: Vec<&str> = text.split('\n').map(str::trim_end).collect();
    let mut out = String::with_capacity(text.len());
    match dialect {
        Dialect::Teams | Dialect::TeamsConnector => {
            let mut prev_item = false;
            let mut blank = false;
            for line in lines {
                if line.trim().is_empty() {
                    blank = true;
                    continue;
                }
                let item = is_list_item(line);
                if !out.is_empty() {
                    out.push_str(if item && prev_item && !blank { "\n" } else { "\n\n" });
                }
                out.push_str(line);
                prev_item = item;
                blank = false;
            }
        }
        _ => {
            let mut blank = false;
            for line in lines {
                if line.trim().is_empty() {
                    blank = true;
                    continue;
                }
                if !out.is_empty() {
                    out.push_str(if blank { "\n\n" } else { "\n" });
                }
                blank = false;
                out.push_str(line);
            }
        }
    }
    out
}

fn is_list_item(line: &str) -> bool {
    let l = line.trim_start();
    l.starts_with("- ") || {
        let digits = l.bytes().take_while(u8::is_ascii_digit).count();
        digits > 0 && l[digits..].starts_with(". ")
    }
}
