//! What a placeholder resolves to for one event: attributes walked through external keys,
//! case logs (the event's `log` entry standing for a log the object does not carry), links
//! to the console and the portal, and whether the value is text or HTML.

use std::borrow::Cow;
use std::fmt::Write as _;

use percent_encoding::utf8_percent_encode;
use serde_json::{Map, Value};

use super::{markup, Expr, Link, Placeholder, RenderContext, Root, ValueKind, URL_COMPONENT};
use crate::event::Event;

/// A substituted value and whether it is HTML (only `html(…)`, `head_html(…)` and
/// `hyperlink(…)` are).
pub(super) struct Rendered {
    pub(super) text: String,
    pub(super) kind: ValueKind,
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

pub(super) fn walk<'a>(root: Root, path: &[String], ctx: &RenderContext<'a>) -> Option<Cow<'a, Value>> {
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

pub(super) fn resolve<'a>(p: &Placeholder, ctx: &RenderContext<'a>) -> Option<Cow<'a, Value>> {
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

pub(super) fn resolve_text(p: &Placeholder, ctx: &RenderContext<'_>) -> Rendered {
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
        Expr::HeadHtml(code) => newest_entry(event, code).map(entry_html),
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
