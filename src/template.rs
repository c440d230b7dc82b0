//! iTop-style placeholders (`$this->ref$`, `$this->label(status)$`, `$current_contact->email$`…),
//! parsed once at load into [`Template`]s and rendered with the escaping of the place they
//! land in: JSON strings ([`JsonTemplate`]), URLs, header values or chat markup.
//!
//! No crate parses iTop's placeholder grammar, so it is written here; it is small and
//! fully covered by the tests below.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fmt::Write as _;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{Map, Value};
use thiserror::Error;

use crate::event::Event;
use crate::markup;

/// A placeholder that does not parse.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("placeholder {placeholder}: {message}")]
pub struct TemplateError {
    /// The placeholder as written, `$` included.
    pub placeholder: String,
    /// What is wrong with it.
    pub message: String,
}

/// Where a placeholder's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Root {
    This,
    CurrentContact,
    CurrentUser,
    Mentioned,
    Previous,
    Trigger,
    Action,
    AppUrl,
}

/// What a placeholder asks of its root.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expr {
    /// `a->b->c`: an attribute, walked through external keys.
    Path(Vec<String>),
    /// `html(path)`.
    Html(Vec<String>),
    /// `text(path)`.
    Text(Vec<String>),
    /// `label(path)`: the value's display label.
    Label(Vec<String>),
    /// `head(log)`: newest case-log entry, as text.
    Head(String),
    /// `head_html(log)`: newest case-log entry, as HTML.
    HeadHtml(String),
    /// `name()`.
    Name,
    /// `hyperlink()`.
    Hyperlink,
    /// `url()`.
    Url,
    /// `$APP_URL$`, `$trigger->name$`, `$action->name$`.
    Whole,
}

/// One parsed placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeholder {
    source: String,
    root: Root,
    expr: Expr,
}

impl Placeholder {
    /// The placeholder as written, `$` included.
    pub fn source(&self) -> &str {
        &self.source
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Text(String),
    Placeholder(Placeholder),
}

/// A text with placeholders, parsed once.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Template {
    segments: Vec<Segment>,
}

/// How a substituted value is escaped for the place it lands in.
#[derive(Clone, Copy)]
pub enum Escape {
    /// As is (the caller encodes the whole result, as JSON serialisation does).
    None,
    /// Percent-encoded, for URLs and paths: a space or a slash in a value cannot change the URL's shape.
    Url,
    /// CR and LF replaced by spaces, so a value cannot add a header.
    Header,
    /// A chat service's markup escaping.
    Markup(fn(&str) -> String),
}

/// Characters left as they are in a URL component (RFC 3986 unreserved).
const URL_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// What a render can see: the event and the names of the trigger and action.
pub struct RenderContext<'a> {
    /// The triggering event.
    pub event: &'a Event,
    /// Trigger name, for `$trigger->name$`.
    pub trigger: &'a str,
    /// Action name, for `$action->name$`.
    pub action: &'a str,
    /// The mentioned contact this render is for (mention triggers).
    pub mentioned: Option<&'a Map<String, Value>>,
    missing: RefCell<BTreeSet<String>>,
    invalid: RefCell<Vec<String>>,
}

impl<'a> RenderContext<'a> {
    /// A context for one (trigger, action) render.
    pub fn new(event: &'a Event, trigger: &'a str, action: &'a str, mentioned: Option<&'a Map<String, Value>>) -> Self {
        RenderContext {
            event,
            trigger,
            action,
            mentioned,
            missing: RefCell::new(BTreeSet::new()),
            invalid: RefCell::new(Vec::new()),
        }
    }

    /// Why the rendered request must not be sent (a value that would change which resource
    /// the URL names), if any value did so.
    pub fn invalid(&self) -> Vec<String> {
        self.invalid.borrow().clone()
    }

    /// Placeholders that resolved to nothing, as written.
    pub fn missing(&self) -> Vec<String> {
        self.missing.borrow().iter().cloned().collect()
    }

    fn report_missing(&self, p: &Placeholder) {
        self.missing.borrow_mut().insert(p.source.clone());
    }
}

impl Template {
    /// Parses `text`; `$` signs that do not open a placeholder stay as they are.
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut segments = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(start) = rest.find('$') {
            let after = &rest[start + 1..];
            let Some(end) = after.find('$') else { break };
            let inner = &after[..end];
            if looks_like_placeholder(inner) {
                literal.push_str(&rest[..start]);
                if !literal.is_empty() {
                    segments.push(Segment::Text(std::mem::take(&mut literal)));
                }
                segments.push(Segment::Placeholder(parse_placeholder(inner)?));
                rest = &after[end + 1..];
            } else {
                literal.push_str(&rest[..=start]);
                rest = after;
            }
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            segments.push(Segment::Text(literal));
        }
        Ok(Template { segments })
    }

    /// Whether the template holds no placeholder.
    pub fn is_static(&self) -> bool {
        self.segments.iter().all(|s| matches!(s, Segment::Text(_)))
    }

    /// The placeholders, in order.
    pub fn placeholders(&self) -> impl Iterator<Item = &Placeholder> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Placeholder(p) => Some(p),
            Segment::Text(_) => None,
        })
    }

    /// Renders with `escape` applied to substituted values only.
    pub fn render(&self, ctx: &RenderContext<'_>, escape: Escape) -> String {
        let mut out = String::new();
        for (i, segment) in self.segments.iter().enumerate() {
            match segment {
                Segment::Text(t) => out.push_str(t),
                Segment::Placeholder(p) => {
                    let text = resolve_text(p, ctx);
                    match escape {
                        Escape::None => out.push_str(&text),
                        // A value of `.` or `..` is a dot-segment, which URL parsing resolves
                        // even percent-encoded, and an empty one drops a path level: either
                        // would send the request to another resource (`DELETE /items/..`).
                        Escape::Url
                            if matches!(text.as_str(), "" | "." | "..")
                                && whole_path_segment(&out, self.segments.get(i + 1)) =>
                        {
                            ctx.invalid.borrow_mut().push(format!(
                                "{} renders {text:?}, which cannot be a path segment of the URL",
                                p.source
                            ));
                        }
                        Escape::Url => out.extend(utf8_percent_encode(&text, URL_COMPONENT)),
                        // Line breaks become spaces; other control characters are dropped:
                        // HTTP cannot carry them, and a value must not split the header.
                        Escape::Header => out.extend(text.chars().filter_map(|c| match c {
                            '\r' | '\n' => Some(' '),
                            c if crate::connection::is_header_control(c) => None,
                            c => Some(c),
                        })),
                        Escape::Markup(f) => out.push_str(&f(&text)),
                    }
                }
            }
        }
        out
    }

    /// Renders to a JSON value: a template that is one placeholder keeps the type of a
    /// number, boolean or null; anything else is a string.
    pub fn render_json(&self, ctx: &RenderContext<'_>) -> Value {
        if let [Segment::Placeholder(p)] = self.segments.as_slice() {
            if let Some(v) = resolve(p, ctx) {
                match v.as_ref() {
                    Value::Number(_) | Value::Bool(_) | Value::Null => return v.into_owned(),
                    _ => {}
                }
            }
        }
        Value::String(self.render(ctx, Escape::None))
    }
}

/// Whether a placeholder placed after `before` and followed by `next` fills a whole segment
/// of a URL path: it follows a `/` of the path (not of `scheme://`, not in the query or
/// fragment) and ends the URL or is followed by `/`, `?` or `#`.
fn whole_path_segment(before: &str, next: Option<&Segment>) -> bool {
    let path_start = match before.find("://") {
        Some(scheme_end) => match before[scheme_end + 3..].find('/') {
            Some(slash) => scheme_end + 3 + slash,
            None => return false,
        },
        None => 0,
    };
    let path = &before[path_start..];
    if !path.ends_with('/') || path.contains(['?', '#']) {
        return false;
    }
    match next {
        None => true,
        Some(Segment::Text(t)) => t.starts_with(['/', '?', '#']),
        Some(Segment::Placeholder(_)) => false,
    }
}

/// A JSON document whose strings (keys included) may hold placeholders; rendering it
/// always yields valid JSON because values are substituted into the parsed tree.
#[derive(Debug, Clone, PartialEq)]
pub enum JsonTemplate {
    /// A subtree without placeholders.
    Literal(Value),
    /// A string with placeholders.
    String(Template),
    /// An array with placeholders somewhere inside.
    Array(Vec<JsonTemplate>),
    /// An object with placeholders somewhere inside.
    Object(Vec<(Template, JsonTemplate)>),
}

/// Why a JSON payload is refused.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum JsonTemplateError {
    /// The text is not strict JSON.
    #[error("line {line} column {column}: {message}")]
    Syntax {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// serde_json's message plus a hint.
        message: String,
    },
    /// A placeholder does not parse.
    #[error(transparent)]
    Placeholder(#[from] TemplateError),
}

impl JsonTemplate {
    /// Parses JSON text strictly (single quotes, trailing commas and comments are errors),
    /// then compiles the placeholders in its strings.
    pub fn parse_text(text: &str) -> Result<JsonTemplate, JsonTemplateError> {
        let value: Value = serde_json::from_str(text).map_err(|e| JsonTemplateError::Syntax {
            line: e.line(),
            column: e.column(),
            message: format!("{}{}", strip_position(&e.to_string()), crate::event::json_hint(text, &e)),
        })?;
        Ok(JsonTemplate::compile(&value)?)
    }

    /// Compiles the placeholders of an already parsed value.
    pub fn compile(value: &Value) -> Result<JsonTemplate, TemplateError> {
        Ok(match value {
            Value::String(s) => {
                let t = Template::parse(s)?;
                if t.is_static() {
                    JsonTemplate::Literal(value.clone())
                } else {
                    JsonTemplate::String(t)
                }
            }
            Value::Array(items) => {
                let items = items.iter().map(JsonTemplate::compile).collect::<Result<Vec<_>, _>>()?;
                if items.iter().all(|i| matches!(i, JsonTemplate::Literal(_))) {
                    JsonTemplate::Literal(value.clone())
                } else {
                    JsonTemplate::Array(items)
                }
            }
            Value::Object(map) => {
                let mut entries = Vec::with_capacity(map.len());
                let mut dynamic = false;
                for (k, v) in map {
                    let key = Template::parse(k)?;
                    let v = JsonTemplate::compile(v)?;
                    dynamic |= !key.is_static() || !matches!(v, JsonTemplate::Literal(_));
                    entries.push((key, v));
                }
                if dynamic {
                    JsonTemplate::Object(entries)
                } else {
                    JsonTemplate::Literal(value.clone())
                }
            }
            other => JsonTemplate::Literal(other.clone()),
        })
    }

    /// Every placeholder in the document.
    pub fn placeholders(&self) -> Vec<&Placeholder> {
        let mut out = Vec::new();
        self.collect(&mut out);
        out
    }

    fn collect<'s>(&'s self, out: &mut Vec<&'s Placeholder>) {
        match self {
            JsonTemplate::Literal(_) => {}
            JsonTemplate::String(t) => out.extend(t.placeholders()),
            JsonTemplate::Array(items) => items.iter().for_each(|i| i.collect(out)),
            JsonTemplate::Object(entries) => {
                for (k, v) in entries {
                    out.extend(k.placeholders());
                    v.collect(out);
                }
            }
        }
    }

    /// Substitutes placeholders into the tree.
    pub fn render(&self, ctx: &RenderContext<'_>) -> Value {
        match self {
            JsonTemplate::Literal(v) => v.clone(),
            JsonTemplate::String(t) => t.render_json(ctx),
            JsonTemplate::Array(items) => Value::Array(items.iter().map(|i| i.render(ctx)).collect()),
            JsonTemplate::Object(entries) => {
                Value::Object(entries.iter().map(|(k, v)| (k.render(ctx, Escape::None), v.render(ctx))).collect())
            }
        }
    }
}

fn strip_position(message: &str) -> &str {
    message.split(" at line ").next().unwrap_or(message)
}

const ROOTS: [(&str, Root); 7] = [
    ("this", Root::This),
    ("current_contact", Root::CurrentContact),
    ("current_user", Root::CurrentUser),
    ("mentioned", Root::Mentioned),
    ("previous", Root::Previous),
    ("trigger", Root::Trigger),
    ("action", Root::Action),
];

fn looks_like_placeholder(inner: &str) -> bool {
    inner == "APP_URL" || ROOTS.iter().any(|(name, _)| inner.strip_prefix(name).is_some_and(|r| r.starts_with("->")))
}

fn parse_placeholder(inner: &str) -> Result<Placeholder, TemplateError> {
    let source = format!("${inner}$");
    let err = |message: &str| TemplateError { placeholder: source.clone(), message: message.to_string() };
    if inner == "APP_URL" {
        return Ok(Placeholder { source, root: Root::AppUrl, expr: Expr::Whole });
    }
    let (name, root) = ROOTS
        .iter()
        .find(|(name, _)| inner.strip_prefix(name).is_some_and(|r| r.starts_with("->")))
        .copied()
        .ok_or_else(|| err("unknown root"))?;
    let rest = &inner[name.len() + 2..];
    let expr = if let Some(open) = rest.find('(') {
        let verb = &rest[..open];
        let arg = rest[open + 1..].strip_suffix(')').ok_or_else(|| err("a verb's argument must end with ')'"))?.trim();
        let path = || {
            parse_path(arg)
                .ok_or_else(|| err("the argument must be an attribute code such as `status` or `team_id->name`"))
        };
        let no_arg = |e: Expr| if arg.is_empty() { Ok(e) } else { Err(err(&format!("{verb}() takes no argument"))) };
        let expr = match verb {
            "html" => Expr::Html(path()?),
            "text" => Expr::Text(path()?),
            "label" => Expr::Label(path()?),
            "head" | "head_html" => {
                let p = path()?;
                let [code] = p.as_slice() else {
                    return Err(err(&format!("{verb}() takes one case-log attribute code")));
                };
                if verb == "head" {
                    Expr::Head(code.clone())
                } else {
                    Expr::HeadHtml(code.clone())
                }
            }
            "name" => no_arg(Expr::Name)?,
            "hyperlink" => no_arg(Expr::Hyperlink)?,
            "url" => no_arg(Expr::Url)?,
            _ => {
                return Err(err(&format!(
                    "unknown verb {verb:?} (known: html, text, label, head, head_html, name, hyperlink, url)"
                )))
            }
        };
        if root != Root::This {
            return Err(err("verbs apply to $this-> only"));
        }
        expr
    } else {
        Expr::Path(
            parse_path(rest)
                .ok_or_else(|| err("expected attribute codes made of letters, digits and '_', joined by '->'"))?,
        )
    };
    if matches!(root, Root::Trigger | Root::Action) {
        if expr != Expr::Path(vec!["name".into()]) {
            return Err(err(&format!("only {name}->name is available")));
        }
        return Ok(Placeholder { source, root, expr: Expr::Whole });
    }
    Ok(Placeholder { source, root, expr })
}

fn parse_path(text: &str) -> Option<Vec<String>> {
    let parts: Vec<String> = text.split("->").map(str::to_string).collect();
    parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')).then_some(parts)
}

/// The map a root's paths walk.
fn root_map<'a>(root: Root, ctx: &RenderContext<'a>) -> Option<&'a Map<String, Value>> {
    match root {
        Root::This => Some(&ctx.event.object),
        Root::CurrentContact => Some(&ctx.event.actor.contact),
        Root::CurrentUser => Some(&ctx.event.actor.user),
        Root::Mentioned => ctx.mentioned,
        Root::Previous => Some(&ctx.event.previous),
        Root::Trigger | Root::Action | Root::AppUrl => None,
    }
}

fn walk<'a>(root: Root, path: &[String], ctx: &RenderContext<'a>) -> Option<Cow<'a, Value>> {
    if root == Root::This && path.len() == 1 && path[0] == "id" && !ctx.event.object.contains_key("id") {
        return Some(Cow::Owned(Value::String(ctx.event.key.clone())));
    }
    let mut current = root_map(root, ctx)?.get(path.first()?)?;
    for segment in &path[1..] {
        current = current.as_object()?.get(segment)?;
    }
    Some(Cow::Borrowed(current))
}

fn resolve<'a>(p: &Placeholder, ctx: &RenderContext<'a>) -> Option<Cow<'a, Value>> {
    let found = match &p.expr {
        Expr::Path(path) => walk(p.root, path, ctx),
        _ => None,
    };
    if found.is_none() {
        // Verbs and names resolve to text; `resolve_text` reports them.
        if matches!(p.expr, Expr::Path(_)) {
            ctx.report_missing(p);
        }
    }
    found
}

fn resolve_text(p: &Placeholder, ctx: &RenderContext<'_>) -> String {
    let event = ctx.event;
    let text = match &p.expr {
        Expr::Path(_) => return resolve(p, ctx).map(|v| value_text(&v)).unwrap_or_default(),
        Expr::Whole => match p.root {
            Root::Trigger => Some(ctx.trigger.to_string()),
            Root::Action => Some(ctx.action.to_string()),
            _ => event.app_url(),
        },
        Expr::Html(path) => walk(p.root, path, ctx).map(|v| value_html(&v)),
        Expr::Text(path) => walk(p.root, path, ctx).map(|v| markup::html_to_text(&value_text(&v))),
        Expr::Label(path) => {
            let label = (path.len() == 1).then(|| event.labels.values.get(&path[0])).flatten().map(value_text);
            label.or_else(|| walk(p.root, path, ctx).map(|v| value_text(&v)))
        }
        Expr::Head(code) => newest_entry(event, code).map(|e| entry_text(e, false)),
        Expr::HeadHtml(code) => newest_entry(event, code).map(|e| entry_text(e, true)),
        Expr::Name => Some(object_name(event)),
        Expr::Url => object_url(event),
        Expr::Hyperlink => object_url(event).map(|url| {
            format!("<a href=\"{}\">{}</a>", markup::html_escape(&url), markup::html_escape(&object_name(event)))
        }),
    };
    text.unwrap_or_else(|| {
        ctx.report_missing(p);
        String::new()
    })
}

/// The friendly name of the triggering object.
pub fn object_name(event: &Event) -> String {
    ["friendlyname", "name", "ref"]
        .iter()
        .find_map(|k| event.object.get(*k).filter(|v| !v.is_null()).map(value_text))
        .unwrap_or_else(|| event.object_key())
}

/// The object's details page in the emitting application.
pub fn object_url(event: &Event) -> Option<String> {
    event.app_url().map(|base| {
        format!(
            "{base}pages/UI.php?operation=details&class={}&id={}",
            utf8_percent_encode(&event.class, URL_COMPONENT),
            utf8_percent_encode(&event.key, URL_COMPONENT)
        )
    })
}

fn newest_entry<'a>(event: &'a Event, code: &str) -> Option<&'a Value> {
    let log = event.object.get(code)?;
    log.get("entries").and_then(|e| e.as_array()).and_then(|a| a.first()).or_else(|| {
        // The entry added by this change, when the object does not carry the log.
        event.log.as_ref().filter(|l| l.attribute == code).map(|l| &l.entry)
    })
}

fn entry_text(entry: &Value, html: bool) -> String {
    let field = |k: &str| entry.get(k).and_then(Value::as_str);
    if html {
        field("message_html").map(str::to_string).unwrap_or_else(|| markup::html_escape(field("message").unwrap_or("")))
    } else {
        field("message")
            .map(str::to_string)
            .unwrap_or_else(|| markup::html_to_text(field("message_html").unwrap_or("")))
    }
}

/// A value as plain text: external keys by name, linked sets as a list, case logs in full.
pub fn value_text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Array(items) => items.iter().map(value_text).filter(|s| !s.is_empty()).collect::<Vec<_>>().join(", "),
        Value::Object(map) => {
            if let Some(entries) = map.get("entries").and_then(Value::as_array) {
                let mut out = String::new();
                for e in entries {
                    let f = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("");
                    let _ = writeln!(out, "{} {}: {}", f("date"), f("user_login"), entry_text(e, false));
                }
                return out.trim_end().to_string();
            }
            ["friendlyname", "name", "id"]
                .iter()
                .find_map(|k| map.get(*k).map(value_text))
                .unwrap_or_else(|| value.to_string())
        }
    }
}

fn value_html(value: &Value) -> String {
    match value {
        Value::String(s) if markup::looks_like_html(s) => s.clone(),
        Value::Object(map) if map.contains_key("entries") => map["entries"]
            .as_array()
            .map(|entries| entries.iter().map(|e| entry_text(e, true)).collect::<Vec<_>>().join("<hr>"))
            .unwrap_or_default(),
        other => markup::html_escape(&value_text(other)),
    }
}

#[cfg(test)]
mod tests;
