//! iTop-style placeholders (`$this->ref$`, `$this->label(status)$`, `$current_contact->email$`…),
//! parsed once at load into [`Template`]s and rendered with the escaping of the place they
//! land in: JSON strings ([`JsonTemplate`]), URLs, header values or chat markup.
//!
//! No crate parses iTop's placeholder grammar, so it is written here; it is small and
//! fully covered by the tests below.

use std::cell::RefCell;
use std::collections::BTreeSet;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{Map, Value};
use thiserror::Error;

use crate::event::Event;
use crate::rich_text as markup;
pub use crate::rich_text::{Origin, ValueKind};

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

/// Characters left as they are in a URL component (RFC 3986 unreserved).
const URL_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Characters a header value cannot carry: C0 controls but tab, DEL, and C1 controls.
pub fn is_header_control(c: char) -> bool {
    c != '\t' && c.is_control()
}

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
                            c if is_header_control(c) => None,
                            c => Some(c),
                        })),
                        Escape::Form => out.push_str(&form_encode(&text)),
                        Escape::Xml => markup::xml_escape_into(&mut out, &text),
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

mod json;
mod resolve;

pub use json::JsonTemplate;
pub use resolve::{object_name, plain_text, value_text};
use resolve::{resolve, resolve_text, Rendered};

#[cfg(test)]
mod tests;
