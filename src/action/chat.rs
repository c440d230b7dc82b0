//! What the chat actions share: the attribute rows, actor name and buttons that Slack and
//! Teams both show. The conversion of a rendered message into each service's markup is
//! [`crate::rich_text::chat`].

use std::collections::BTreeMap;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::config_file::raw::{OtherActions, PresentationLists};
use crate::event::Event;
use serde_json::Value;

use crate::template::{plain_text, value_text};

use super::{presentation_codes, ChatSpec};

/// One row of the attribute list: the attribute's label and its value as text (the value's
/// label when the event has one, as `$this->label(code)$` gives it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AttributeRow {
    pub label: String,
    pub value: String,
}

/// The rows of the presentation list `attributes_from` names, for the event's class.
/// Codes the object does not have are left out.
pub(crate) fn attribute_rows(
    spec: &ChatSpec,
    event: &Event,
    presentation: &BTreeMap<String, PresentationLists>,
) -> Vec<AttributeRow> {
    presentation_codes(spec.attributes_from, event, presentation)
        .iter()
        .filter_map(|code| {
            let value = match event.labels.values.get(code) {
                Some(label) => value_text(label),
                None => plain_text(event.object.get(code)?, event.is_html(std::slice::from_ref(code))),
            };
            let label = event
                .labels
                .attributes
                .get(code)
                .and_then(Value::as_str)
                .filter(|l| !l.trim().is_empty())
                .unwrap_or(code);
            Some(AttributeRow { label: label.to_string(), value })
        })
        .collect()
}

/// Who made the change: the contact's friendly name, else first name and name, else the
/// user account's name or login.
pub(crate) fn actor_name(event: &Event) -> Option<String> {
    let text = |map: &serde_json::Map<String, Value>, key: &str| {
        map.get(key).map(value_text).map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
    };
    let contact = &event.actor.contact;
    let user = &event.actor.user;
    text(contact, "friendlyname")
        .or_else(|| match (text(contact, "first_name"), text(contact, "name")) {
            (Some(first), Some(name)) => Some(format!("{first} {name}")),
            (first, name) => name.or(first),
        })
        .or_else(|| text(user, "friendlyname"))
        .or_else(|| text(user, "login"))
}

/// What a button does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ButtonKind {
    Modify,
    Delete,
    Transition,
}

/// A link button to the object in the emitting application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Button {
    pub kind: ButtonKind,
    /// Stable id: `modify`, `delete` or `stimulus_<code>`.
    pub id: String,
    /// Label as shown, plain text.
    pub label: String,
    /// Where it leads.
    pub url: String,
}

/// Characters left as they are in a query value (RFC 3986 unreserved).
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Transition buttons one message shows at most: more than any service displays (Slack
/// takes 100 buttons, Teams connector cards 4), and a bound on the work one event costs.
pub(crate) const MAX_TRANSITION_BUTTONS: usize = 100;

/// The buttons an action asks for, in order: Modify, Delete, then the transitions
/// (`other_actions: yes`: every one available now; `specify`: the listed codes that are
/// available now), at most [`MAX_TRANSITION_BUTTONS`] of them. None without the
/// application's URL (`source.url`) to point to.
pub(crate) fn buttons(spec: &ChatSpec, event: &Event) -> Vec<Button> {
    let Some(base) = event.app_url() else { return Vec::new() };
    let class = utf8_percent_encode(&event.class, QUERY_VALUE).to_string();
    let key = utf8_percent_encode(&event.key, QUERY_VALUE).to_string();
    let page = |operation: &str| format!("{base}pages/UI.php?operation={operation}&class={class}&id={key}");
    let mut out = Vec::new();
    if spec.modify_button {
        out.push(Button { kind: ButtonKind::Modify, id: "modify".into(), label: "Modify".into(), url: page("modify") });
    }
    if spec.delete_button {
        out.push(Button { kind: ButtonKind::Delete, id: "delete".into(), label: "Delete".into(), url: page("delete") });
    }
    let wanted: Vec<&str> = match spec.other_actions {
        OtherActions::No => Vec::new(),
        OtherActions::Yes => event.transitions.iter().map(|t| t.code.as_str()).collect(),
        OtherActions::Specify => spec.other_actions_codes.iter().map(String::as_str).collect(),
    };
    // Indexed once: an event may list many transitions, and a lookup per wanted code would
    // make the work quadratic in them. The first transition of a code wins.
    let mut by_code: std::collections::HashMap<&str, &crate::event::Transition> =
        std::collections::HashMap::with_capacity(event.transitions.len());
    for t in &event.transitions {
        by_code.entry(t.code.as_str()).or_insert(t);
    }
    let mut seen = std::collections::HashSet::new();
    let mut shown = 0;
    for code in wanted {
        if shown == MAX_TRANSITION_BUTTONS {
            break;
        }
        let Some(t) = by_code.get(code) else { continue };
        if code.is_empty() || !seen.insert(code) {
            continue;
        }
        shown += 1;
        let label = t.label.as_deref().map(str::trim).filter(|l| !l.is_empty()).unwrap_or(code);
        let stimulus = utf8_percent_encode(code, QUERY_VALUE);
        out.push(Button {
            kind: ButtonKind::Transition,
            id: format!("stimulus_{}", code.chars().take(200).collect::<String>()),
            label: label.to_string(),
            url: format!("{base}pages/UI.php?operation=stimulus&stimulus={stimulus}&class={class}&id={key}"),
        });
    }
    out
}
