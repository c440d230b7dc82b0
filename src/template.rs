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
use crate::rich_text as markup;

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
    ModulesUrl,
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
    /// `name()`, of the object or of the external key the path leads to.
    Name(Vec<String>),
    /// `hyperlink()`, `hyperlink(portal)`…: an HTML link to the object.
    Hyperlink(Vec<String>, Link),
    /// `url()`, `url(portal)`…: the link's address alone.
    Url(Vec<String>, Link),
    /// `$APP_URL$`, `$MODULES_URL$`, `$trigger->name$`, `$action->name$`.
    Whole,
}

/// Which page of the emitting application a link opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// The console's details page (`pages/UI.php?operation=details`).
    Console,
    /// The portal's view page (`hyperlink(portal)`, `hyperlink(itop-portal-view)`).
    PortalView,
    /// The portal's edit page (`hyperlink(itop-portal-edit)`).
    PortalEdit,
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
    /// `application/x-www-form-urlencoded`: every byte but the unreserved ones
    /// percent-encoded, a space as `+`, so a value cannot add or cut a field.
    Form,
    /// XML character data and attribute values: `& < > " '` as entities, and characters
    /// XML 1.0 cannot carry dropped.
    Xml,
    /// A chat service's markup escaping; told where the value comes from, because only a
    /// mentioned contact's own values may carry a mention, and whether the value is HTML
    /// (`html(…)`, `head_html(…)`, `hyperlink()`), which is the only HTML a message takes.
    Markup(fn(&str, Origin, ValueKind) -> String),
}

/// What a substituted value holds, for the chat markup escaping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// Text: shown as written, never read as markup.
    Text,
    /// HTML from the event (an attribute declared HTML, a case-log entry): parsed as HTML.
    Html,
    /// Well-formed HTML written here (a link, an escaped text value).
    OwnHtml,
}

/// Where a substituted value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The event: the object, the actor, previous values, names.
    Event,
    /// `$mentioned->…$`: the contact a mention trigger fired for.
    Mentioned,
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

    /// Records why the rendered request must not be sent.
    pub fn refuse(&self, why: String) {
        self.invalid.borrow_mut().push(why);
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

    /// The text written around the placeholders, in order.
    pub fn literals(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Text(t) => Some(t.as_str()),
            Segment::Placeholder(_) => None,
        })
    }

    /// Every part in order: written text as `Ok`, placeholders as `Err`.
    pub fn parts(&self) -> impl Iterator<Item = Result<&str, &Placeholder>> {
        self.segments.iter().map(|s| match s {
            Segment::Text(t) => Ok(t.as_str()),
            Segment::Placeholder(p) => Err(p),
        })
    }

    /// The template is exactly one placeholder, nothing around it.
    pub fn single_placeholder(&self) -> Option<&Placeholder> {
        match self.segments.as_slice() {
            [Segment::Placeholder(p)] => Some(p),
            _ => None,
        }
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
                    let Rendered { text, kind } = resolve_text(p, ctx);
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
                        Escape::Form => out.push_str(&form_encode(&text)),
                        Escape::Xml => xml_escape_into(&mut out, &text),
                        Escape::Markup(f) => {
                            let origin = if p.root == Root::Mentioned { Origin::Mentioned } else { Origin::Event };
                            out.push_str(&f(&text, origin, kind))
                        }
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

/// Percent-encodes `text` as one URL component (path segment, query value).
pub fn url_encode(text: &str) -> String {
    utf8_percent_encode(text, URL_COMPONENT).to_string()
}

/// Percent-encodes `text` as a form field name or value (`application/x-www-form-urlencoded`):
/// unreserved characters and `*` stay, a space becomes `+`, every other byte `%XX`.
pub fn form_encode(text: &str) -> String {
    const FORM: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'*');
    utf8_percent_encode(text, FORM).to_string().replace("%20", "+")
}

/// Escapes `text` for XML character data and quoted attribute values; characters XML 1.0
/// cannot carry at all (most C0 controls, U+FFFE, U+FFFF) are dropped.
pub fn xml_escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
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
    ///
    /// A placeholder written as a whole JSON value without quotes (`{"id": $this->id$}`, as
    /// iTop users often write) is read as if quoted: it keeps a number, boolean or null type
    /// and is a string otherwise.
    pub fn parse_text(text: &str) -> Result<JsonTemplate, JsonTemplateError> {
        let quoted = quote_bare_placeholders(text);
        let text = quoted.as_deref().unwrap_or(text);
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

/// `text` with every placeholder that stands outside a JSON string put in quotes, or `None`
/// when there is none (positions in error messages then stay the user's).
fn quote_bare_placeholders(text: &str) -> Option<String> {
    let mut out = String::new();
    let mut copied = 0;
    let mut in_string = false;
    let mut escaped = false;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else if b == b'"' {
            in_string = true;
        } else if b == b'$' {
            if let Some(end) = text[i + 1..].find('$') {
                let inner = &text[i + 1..i + 1 + end];
                if looks_like_placeholder(inner) {
                    out.push_str(&text[copied..i]);
                    out.push('"');
                    out.push_str(&text[i..i + end + 2]);
                    out.push('"');
                    i += end + 2;
                    copied = i;
                    continue;
                }
            }
        }
        i += 1;
    }
    if copied == 0 {
        return None;
    }
    out.push_str(&text[copied..]);
    Some(out)
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

/// Every placeholder form, as `check` lists them when one is unknown.
pub const KNOWN_FORMS: &str = "$this->attribute$, $this->external_key->attribute$, $this->id$, \
$this->html(attribute)$, $this->text(attribute)$, $this->label(attribute)$, $this->head(case_log)$, \
$this->head_html(case_log)$, $this->name()$, $this->hyperlink()$, $this->hyperlink(portal)$, \
$this->hyperlink(itop-portal-view)$, $this->hyperlink(itop-portal-edit)$, $this->url()$, $this->url(portal)$ \
(functions also after an external key: $this->org_id->hyperlink()$), $current_contact->attribute$, \
$current_user->attribute$, $mentioned->attribute$, $previous->attribute$, $trigger->name$, $action->name$, \
$APP_URL$, $MODULES_URL$";

/// Whether the text between two `$` is meant as a placeholder: it starts with a letter or
/// `_` and holds only what placeholders are made of (no space outside parentheses). `$5`,
/// `$ 10 $` or JSON such as `"$ref": "$defs"` are text.
fn looks_like_placeholder(inner: &str) -> bool {
    if ROOTS.iter().any(|(name, _)| inner.strip_prefix(name).is_some_and(|r| r.starts_with("->"))) {
        return true;
    }
    let mut depth = 0usize;
    inner.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && inner.len() <= 256
        && inner.chars().all(|c| match c {
            '(' => {
                depth += 1;
                true
            }
            ')' => {
                depth = depth.saturating_sub(1);
                true
            }
            ' ' | ',' => depth > 0,
            c => c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '>'),
        })
}

/// A hint for forms people write that iTop does not have.
fn unknown_hint(inner: &str) -> String {
    let suggestion = match inner {
        "current_contact_name" => Some("$current_contact->name$"),
        "current_contact_firstname" => Some("$current_contact->first_name$"),
        "current_contact_email" => Some("$current_contact->email$"),
        "current_contact_id" => Some("$current_contact->id$"),
        "current_date" | "current_time" | "current_datetime" => {
            return "iTop has no date or time placeholder; ".to_string()
        }
        _ => None,
    };
    suggestion.map(|s| format!("did you mean {s}? ")).unwrap_or_default()
}

fn parse_placeholder(inner: &str) -> Result<Placeholder, TemplateError> {
    let source = format!("${inner}$");
    let err = |message: &str| TemplateError { placeholder: source.clone(), message: message.to_string() };
    match inner {
        "APP_URL" => return Ok(Placeholder { source, root: Root::AppUrl, expr: Expr::Whole }),
        "MODULES_URL" => return Ok(Placeholder { source, root: Root::ModulesUrl, expr: Expr::Whole }),
        _ => {}
    }
    let Some((name, root)) =
        ROOTS.iter().find(|(name, _)| inner.strip_prefix(name).is_some_and(|r| r.starts_with("->"))).copied()
    else {
        return Err(err(&format!("unknown placeholder; {}known forms: {KNOWN_FORMS}", unknown_hint(inner))));
    };
    let rest = &inner[name.len() + 2..];
    let expr = if let Some(open) = rest.find('(') {
        // `a->b->verb(arg)`: the verb applies to the external key `a->b` leads to.
        let (prefix, verb) = match rest[..open].rfind("->") {
            Some(i) => (&rest[..i], &rest[i + 2..open]),
            None => ("", &rest[..open]),
        };
        let prefix = if prefix.is_empty() {
            Vec::new()
        } else {
            parse_path(prefix).ok_or_else(|| err("expected attribute codes joined by '->' before the function"))?
        };
        let arg = rest[open + 1..].strip_suffix(')').ok_or_else(|| err("a verb's argument must end with ')'"))?.trim();
        let path = || {
            let mut p = prefix.clone();
            p.extend(
                parse_path(arg)
                    .ok_or_else(|| err("the argument must be an attribute code such as `status` or `team_id->name`"))?,
            );
            Ok::<_, TemplateError>(p)
        };
        let link = |verb: &str| {
            match arg {
            "" => Ok(Link::Console),
            "portal" | "itop-portal-view" => Ok(Link::PortalView),
            "itop-portal-edit" => Ok(Link::PortalEdit),
            other => Err(err(&format!(
                "{verb}({other}) is not known (known: {verb}(), {verb}(portal), {verb}(itop-portal-view), {verb}(itop-portal-edit))"
            ))),
        }
        };
        let expr = match verb {
            "html" => Expr::Html(path()?),
            "text" => Expr::Text(path()?),
            "label" => Expr::Label(path()?),
            "head" | "head_html" => {
                let p = path()?;
                let [code] = p.as_slice() else {
                    return Err(err(&format!("{verb}() takes one case-log attribute code of the object")));
                };
                if verb == "head" {
                    Expr::Head(code.clone())
                } else {
                    Expr::HeadHtml(code.clone())
                }
            }
            "name" if arg.is_empty() => Expr::Name(prefix),
            "name" => return Err(err("name() takes no argument")),
            "hyperlink" => Expr::Hyperlink(prefix, link(verb)?),
            "url" => Expr::Url(prefix, link(verb)?),
            _ => {
                return Err(err(&format!(
                    "unknown function {verb:?} (known: html, text, label, head, head_html, name, hyperlink, url); known forms: {KNOWN_FORMS}"
                )))
            }
        };
        if root != Root::This {
            return Err(err("functions apply to $this-> only"));
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

/// A substituted value and whether it is HTML (only `html(…)`, `head_html(…)` and
/// `hyperlink(…)` are).
struct Rendered {
    text: String,
    kind: ValueKind,
}

/// The map a root's paths walk.
fn root_map<'a>(root: Root, ctx: &RenderContext<'a>) -> Option<&'a Map<String, Value>> {
    match root {
        Root::This => Some(&ctx.event.object),
        Root::CurrentContact => Some(&ctx.event.actor.contact),
        Root::CurrentUser => Some(&ctx.event.actor.user),
        Root::Mentioned => ctx.mentioned,
        Root::Previous => Some(&ctx.event.previous),
        Root::Trigger | Root::Action | Root::AppUrl | Root::ModulesUrl => None,
    }
}

fn walk<'a>(root: Root, path: &[String], ctx: &RenderContext<'a>) -> Option<Cow<'a, Value>> {
    if root == Root::This && path.len() == 1 && path[0] == "id" && !ctx.event.object.contains_key("id") {
        return Some(Cow::Owned(Value::String(ctx.event.key.clone())));
    }
    let first = path.first()?;
    let mut current = match root_map(root, ctx)?.get(first) {
        Some(v) => v,
        None if root == Root::This && path.len() == 1 => {
            // The object does not carry its case log: the entry this change added stands for it.
            let log = ctx.event.log.as_ref().filter(|l| &l.attribute == first)?;
            return Some(Cow::Owned(serde_json::json!({"entries": [log.entry.clone()]})));
        }
        None => return None,
    };
    for segment in &path[1..] {
        current = current.as_object()?.get(segment)?;
    }
    Some(Cow::Borrowed(current))
}

/// Whether the event declares the attribute `path` leads to as HTML (`formats`).
fn declared_html(root: Root, path: &[String], event: &Event) -> bool {
    matches!(root, Root::This | Root::Previous) && event.is_html(path)
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

fn resolve_text(p: &Placeholder, ctx: &RenderContext<'_>) -> Rendered {
    let event = ctx.event;
    let text = |t: String| (t, ValueKind::Text);
    let found: Option<(String, ValueKind)> = match &p.expr {
        Expr::Path(path) => {
            let html = declared_html(p.root, path, event);
            let text = resolve(p, ctx).map(|v| plain_text(&v, html)).unwrap_or_default();
            return Rendered { text, kind: ValueKind::Text };
        }
        Expr::Whole => match p.root {
            Root::Trigger => Some(text(ctx.trigger.to_string())),
            Root::Action => Some(text(ctx.action.to_string())),
            Root::ModulesUrl => event.modules_url().map(text),
            _ => event.app_url().map(text),
        },
        Expr::Html(path) => walk(p.root, path, ctx).map(|v| value_html(&v, declared_html(p.root, path, event))),
        Expr::Text(path) => walk(p.root, path, ctx).map(|v| text(plain_text(&v, declared_html(p.root, path, event)))),
        Expr::Label(path) => {
            let label = (path.len() == 1).then(|| event.labels.values.get(&path[0])).flatten().map(value_text);
            label.or_else(|| walk(p.root, path, ctx).map(|v| value_text(&v))).map(text)
        }
        Expr::Head(code) => newest_entry(event, code).map(|e| text(entry_text(e, false))),
        Expr::HeadHtml(code) => newest_entry(event, code).map(|e| entry_html(e)),
        Expr::Name(prefix) => target(prefix, ctx).map(|t| text(t.name)),
        Expr::Url(prefix, link) => target(prefix, ctx).and_then(|t| link_url(event, &t, *link)).map(text),
        Expr::Hyperlink(prefix, link) => target(prefix, ctx).and_then(|t| {
            link_url(event, &t, *link).map(|url| {
                (
                    format!("<a href=\"{}\">{}</a>", markup::html_escape(&url), markup::html_escape(&t.name)),
                    ValueKind::OwnHtml,
                )
            })
        }),
    };
    match found {
        Some((text, kind)) => Rendered { text, kind },
        None => {
            ctx.report_missing(p);
            Rendered { text: String::new(), kind: ValueKind::Text }
        }
    }
}

/// An object a link or name placeholder designates.
struct Target {
    class: String,
    id: String,
    name: String,
}

/// The triggering object, or the external key `prefix` leads to (which must carry its
/// `id` and its `class` or `finalclass`).
fn target(prefix: &[String], ctx: &RenderContext<'_>) -> Option<Target> {
    let event = ctx.event;
    if prefix.is_empty() {
        return Some(Target { class: event.class.clone(), id: event.key.clone(), name: object_name(event) });
    }
    let value = walk(Root::This, prefix, ctx)?;
    let map = value.as_object()?;
    let id = map.get("id").map(value_text).filter(|s| !s.is_empty())?;
    let class = ["class", "finalclass"].iter().find_map(|k| map.get(*k).and_then(Value::as_str))?.to_string();
    let name = ["friendlyname", "name"]
        .iter()
        .find_map(|k| map.get(*k).filter(|v| !v.is_null()).map(value_text))
        .unwrap_or_else(|| id.clone());
    Some(Target { class, id, name })
}

/// The address of a link to `t`: the console's details page from `source.url`, or a
/// portal page from `source.portal_url`, as iTop builds them.
fn link_url(event: &Event, t: &Target, link: Link) -> Option<String> {
    let class = utf8_percent_encode(&t.class, URL_COMPONENT);
    let id = utf8_percent_encode(&t.id, URL_COMPONENT);
    match link {
        Link::Console => {
            event.app_url().map(|base| format!("{base}pages/UI.php?operation=details&class={class}&id={id}"))
        }
        Link::PortalView | Link::PortalEdit => {
            let portal = event.source.portal_url.as_deref().filter(|u| !u.is_empty())?;
            let page = if link == Link::PortalView { "view" } else { "edit" };
            // The portal's route is the path after its entry point; its query stays last.
            let (base, query) = portal.split_once('?').map_or((portal, None), |(b, q)| (b, Some(q)));
            let mut url = format!("{}/object/{page}/{class}/{id}", base.trim_end_matches('/'));
            if let Some(q) = query {
                url.push('?');
                url.push_str(q);
            }
            Some(url)
        }
    }
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
    let t = Target { class: event.class.clone(), id: event.key.clone(), name: String::new() };
    link_url(event, &t, Link::Console)
}

fn newest_entry<'a>(event: &'a Event, code: &str) -> Option<&'a Value> {
    let carried = event.object.get(code).and_then(|l| l.get("entries")).and_then(Value::as_array);
    carried.and_then(|a| a.first()).or_else(|| {
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

/// A value as plain text, an HTML attribute's markup converted to text.
pub fn plain_text(value: &Value, html: bool) -> String {
    match value {
        Value::String(s) if html => markup::html_to_text(s),
        other => value_text(other),
    }
}

/// A value as HTML: an HTML attribute as it is, a case log's entries in their HTML form,
/// any other value escaped.
fn value_html(value: &Value, html: bool) -> (String, ValueKind) {
    match value {
        Value::String(s) if html => (s.clone(), ValueKind::Html),
        Value::Object(map) if map.contains_key("entries") => {
            let entries = map["entries"].as_array().map(Vec::as_slice).unwrap_or_default();
            let parts: Vec<(String, ValueKind)> = entries.iter().map(entry_html).collect();
            let kind =
                if parts.iter().any(|(_, k)| *k == ValueKind::Html) { ValueKind::Html } else { ValueKind::OwnHtml };
            (parts.into_iter().map(|(t, _)| t).collect::<Vec<_>>().join("<hr>"), kind)
        }
        other => (markup::html_escape(&value_text(other)), ValueKind::OwnHtml),
    }
}

/// A case-log entry as HTML: its `message_html`, else its `message` escaped.
fn entry_html(entry: &Value) -> (String, ValueKind) {
    match entry.get("message_html").and_then(Value::as_str) {
        Some(html) => (html.to_string(), ValueKind::Html),
        None => (entry_text(entry, true), ValueKind::OwnHtml),
    }
}

#[cfg(test)]
mod tests;
