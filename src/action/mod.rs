//! Actions: what to send for a matched trigger. Each type compiles its own fields at load
//! ([`compile`]) and renders the exact HTTP request for an event ([`build_request`]); the
//! chat types hide method, headers and payload so users write only the content.

pub mod chat;
pub mod google_chat;
pub mod itop;
pub mod payload;
pub mod rocketchat;
pub mod slack;
pub mod teams;
pub mod webhook;

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use crate::config_file::raw::{
    ActionConfig, ActionKind, ActionStatus, ActionType, AttributesFrom, CallbackWhen, ChatFields, OtherActions,
    PresentationLists,
};
use crate::config_file::Problems;
use crate::connection::{check_header_name, check_header_text, Connection, UrlForm};
use crate::expr::Expression;
use crate::request::{set_header, Request};
use crate::template::{Escape, JsonTemplate, RenderContext, Template};

/// Variables a callback mapping may read.
pub const CALLBACK_VARIABLES: [&str; 4] = ["response", "event", "object", "previous"];

/// A compiled action.
#[derive(Debug)]
pub struct Action {
    /// Name in the config.
    pub name: String,
    /// Action type.
    pub kind: ActionKind,
    /// enabled, disabled or test.
    pub status: ActionStatus,
    /// Index into `Config::connections`.
    pub connection: usize,
    /// Index into `Config::connections`, for `status: test`.
    pub test_connection: Option<usize>,
    /// Type-specific fields.
    pub spec: Spec,
    /// Attribute updates taken from the answer.
    pub callback: Option<Callback>,
    /// This action's backoff policy, replacing `delivery.retry`.
    pub retry: Option<crate::retry::Backoff>,
}

/// The type-specific part of an action.
#[derive(Debug)]
pub enum Spec {
    /// Generic HTTP call.
    Webhook(webhook::WebhookSpec),
    /// Another iTop's REST/JSON API.
    Itop(itop::ItopSpec),
    /// Slack incoming webhook (Block Kit).
    Slack(ChatSpec),
    /// Rocket.Chat incoming webhook.
    Rocketchat(rocketchat::RocketchatSpec),
    /// Google Chat incoming webhook.
    GoogleChat(google_chat::GoogleChatSpec),
    /// Microsoft Teams (Workflows adaptive card or legacy MessageCard).
    Teams(teams::TeamsSpec),
}

/// Fields Slack and Teams share: the message, the attribute list and the buttons.
#[derive(Debug)]
pub struct ChatSpec {
    /// The message, with placeholders.
    pub message: Template,
    /// Which presentation list to show as fields.
    pub attributes_from: AttributesFrom,
    /// Show the actor's name.
    pub user_info: bool,
    /// Show a Modify button.
    pub modify_button: bool,
    /// Show a Delete button.
    pub delete_button: bool,
    /// Which transition buttons to show.
    pub other_actions: OtherActions,
    /// With `specify`: the stimulus codes to show when available.
    pub other_actions_codes: Vec<String>,
}

/// A compiled callback mapping.
#[derive(Debug)]
pub struct Callback {
    /// When it runs.
    pub when: CallbackWhen,
    /// Attribute code -> expression.
    pub fields: Vec<(String, Expression)>,
}

/// What a chat or API answer means beyond its HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerError {
    /// Short stable label, e.g. `itop_error` or Slack's `channel_not_found`.
    pub reason: String,
    /// The service's own message.
    pub detail: String,
}

/// Checks and compiles one action.
pub fn compile(
    place: &str,
    raw: &ActionConfig,
    connections: &HashMap<String, Option<usize>>,
    presentation: &BTreeMap<String, PresentationLists>,
    problems: &mut Problems,
) -> Option<Action> {
    let before = problems.mark();
    let connection = resolve_connection(&format!("{place}.connection"), &raw.connection, connections, problems);
    let test_connection = raw
        .test_connection
        .as_ref()
        .and_then(|name| resolve_connection(&format!("{place}.test_connection"), name, connections, problems));
    let spec = match &raw.action_type {
        ActionType::Webhook(w) => webhook::compile(place, w, problems).map(Spec::Webhook),
        ActionType::Itop(i) => itop::compile(place, i, problems).map(Spec::Itop),
        ActionType::Slack(c) => compile_chat(place, ActionKind::Slack, c, presentation, problems).map(Spec::Slack),
        ActionType::Rocketchat(r) => rocketchat::compile(place, r, problems).map(Spec::Rocketchat),
        ActionType::GoogleChat(g) => google_chat::compile(place, g, problems).map(Spec::GoogleChat),
        ActionType::Teams(t) => teams::compile(place, t, presentation, problems).map(Spec::Teams),
    };
    let callback = raw.action_type.callback().map(|cb| {
        let mut fields = Vec::new();
        for (code, src) in &cb.fields {
            match Expression::compile(src, &CALLBACK_VARIABLES) {
                Ok(e) => fields.push((code.clone(), e)),
                Err(e) => problems.add(format!("{place}.callback.fields.{code}"), e),
            }
        }
        if fields.is_empty() && cb.fields.is_empty() {
            problems.add(format!("{place}.callback.fields"), "a callback needs at least one field");
        }
        Callback { when: cb.when, fields }
    });
    if let Some(r) = &raw.retry {
        crate::config_file::check_retry(&format!("{place}.retry"), r, problems);
    }
    if problems.added_since(before) {
        return None;
    }
    Some(Action {
        name: raw.name.clone(),
        kind: raw.kind(),
        status: raw.status,
        connection: connection?,
        test_connection,
        spec: spec?,
        callback,
        retry: raw.retry.as_ref().map(crate::retry::Backoff::from),
    })
}

fn resolve_connection(
    place: &str,
    name: &str,
    connections: &HashMap<String, Option<usize>>,
    problems: &mut Problems,
) -> Option<usize> {
    match connections.get(name) {
        None => {
            let known: Vec<&str> = connections.keys().map(String::as_str).collect();
            problems.add(place, format!("no connection named {name:?} (known: {})", known.join(", ")));
            None
        }
        // `None`: the connection itself failed to compile and was reported there.
        Some(&index) => index,
    }
}

/// Parses a text field holding placeholders, recording a problem at `place.field`.
pub(crate) fn template_field(
    place: &str,
    field: &str,
    text: Option<&str>,
    problems: &mut Problems,
) -> Option<Template> {
    match Template::parse(text.unwrap_or("")) {
        Ok(t) => Some(t),
        Err(e) => {
            problems.add(format!("{place}.{field}"), e.to_string());
            None
        }
    }
}

/// Compiles a JSON payload given as JSON text (with placeholders) or as a YAML mapping.
pub(crate) fn json_field(place: &str, field: &str, value: &Value, problems: &mut Problems) -> Option<JsonTemplate> {
    let compiled = match value {
        Value::String(text) => JsonTemplate::parse_text(text).map_err(|e| e.to_string()),
        other => JsonTemplate::compile(other).map_err(|e| e.to_string()),
    };
    match compiled {
        Ok(t) => Some(t),
        Err(e) => {
            problems.add(format!("{place}.{field}"), e);
            None
        }
    }
}

/// Compiles action headers, refusing invalid and reserved names.
pub(crate) fn headers_field(
    place: &str,
    headers: Option<&BTreeMap<String, String>>,
    problems: &mut Problems,
) -> Vec<(String, Template)> {
    let mut out = Vec::new();
    for (k, v) in headers.into_iter().flatten() {
        check_header_name(&format!("{place}.headers.{k}"), k, problems);
        check_header_text(&format!("{place}.headers.{k}"), v, problems);
        if let Some(t) = template_field(place, &format!("headers.{k}"), Some(v), problems) {
            out.push((k.to_ascii_lowercase(), t));
        }
    }
    out
}

/// Compiles the fields Slack and Teams share.
pub(crate) fn compile_chat(
    place: &str,
    kind: ActionKind,
    raw: &ChatFields,
    presentation: &BTreeMap<String, PresentationLists>,
    problems: &mut Problems,
) -> Option<ChatSpec> {
    if raw.message.as_deref().unwrap_or("").trim().is_empty() {
        problems.add(format!("{place}.message"), "a chat action needs a message");
    }
    let message = template_field(place, "message", raw.message.as_deref(), problems);
    let other_actions = raw.other_actions.unwrap_or_default();
    let codes = raw.other_actions_codes.clone().unwrap_or_default();
    if !codes.is_empty() && other_actions != OtherActions::Specify {
        problems.add(format!("{place}.other_actions_codes"), "only with other_actions: specify");
    }
    if other_actions == OtherActions::Specify && codes.is_empty() {
        problems.add(format!("{place}.other_actions_codes"), "other_actions: specify needs at least one stimulus code");
    }
    let attributes_from = raw.attributes_from.unwrap_or_default();
    let fits = matches!(
        (kind, attributes_from),
        (_, AttributesFrom::None | AttributesFrom::List)
            | (ActionKind::Slack, AttributesFrom::Slack)
            | (ActionKind::Teams, AttributesFrom::Msteams)
    );
    if !fits {
        let own = if kind == ActionKind::Teams { "msteams" } else { "slack" };
        problems.add(
            format!("{place}.attributes_from"),
            format!(
                "{:?} is not a list a {} action shows: none, list or {own}",
                format!("{attributes_from:?}").to_lowercase(),
                kind.as_str()
            ),
        );
    }
    if attributes_from != AttributesFrom::None && presentation.is_empty() {
        problems.add(
            format!("{place}.attributes_from"),
            format!("{:?} list requested but the presentation section is empty", attributes_from).to_lowercase(),
        );
    }
    Some(ChatSpec {
        message: message?,
        attributes_from,
        user_info: raw.user_info.unwrap_or(false),
        modify_button: raw.modify_button.unwrap_or(false),
        delete_button: raw.delete_button.unwrap_or(false),
        other_actions,
        other_actions_codes: codes,
    })
}

/// Everything a request is built from.
pub struct BuildContext<'a> {
    /// Placeholder values.
    pub render: &'a RenderContext<'a>,
    /// The connection to send through (the test connection for `status: test`).
    pub connection: &'a Connection,
    /// Attribute lists for chat actions.
    pub presentation: &'a BTreeMap<String, PresentationLists>,
}

/// Renders the exact request an action sends for one event (without the per-attempt
/// `webhook-timestamp` and signature, see [`crate::request::Request::stamp`]).
pub fn build_request(action: &Action, b: &BuildContext<'_>, webhook_id: &str) -> Request {
    let conn = b.connection;
    let mut url = match conn.url_form {
        UrlForm::FromObject => whole_url(&conn.url, b.render),
        _ => conn.url.render(b.render, Escape::Url),
    };
    let mut method = "POST";
    let mut headers: Vec<(String, String)> =
        conn.headers.iter().map(|(k, t)| (k.clone(), t.render(b.render, Escape::Header))).collect();
    let (content_type, body) = match &action.spec {
        Spec::Webhook(w) => {
            method = w.method.as_str();
            if let Some(p) = &w.path {
                let path = match p.single_placeholder() {
                    // The whole path from the object: its `/` kept, each segment encoded.
                    Some(ph) => webhook::path_value(&p.render(b.render, Escape::None), ph.source(), b.render),
                    None => p.render(b.render, Escape::Url),
                };
                url = webhook::join_path(&url, &path);
            }
            set_headers(&mut headers, &w.headers, b.render);
            w.body(b.render)
        }
        Spec::Itop(i) => {
            set_headers(&mut headers, &i.headers, b.render);
            i.body(b.render, &conn.api_version)
        }
        Spec::Slack(s) => slack::body(s, b.render, b.presentation),
        Spec::Rocketchat(r) => rocketchat::body(r, b.render),
        Spec::GoogleChat(g) => {
            if g.thread_key.is_some() {
                url = google_chat::thread_url(&url);
            }
            google_chat::body(g, b.render)
        }
        Spec::Teams(t) => teams::body(t, b.render, b.presentation),
    };
    if let Some(ct) = content_type {
        set_header(&mut headers, "content-type", ct);
    }
    let mut secret_headers = Vec::new();
    if let Some((name, value)) = conn.auth.header() {
        secret_headers.push(name.clone());
        set_header(&mut headers, &name, value);
    }
    set_header(&mut headers, "webhook-id", webhook_id.to_string());
    Request { method: method.to_string(), url, headers, body: body.into(), secret_headers, host_only: conn.chat }
}

/// A connection URL that is one placeholder: the value is the URL, not encoded, and must
/// be an absolute `http`/`https` URL with a host and no credentials; anything else makes
/// the request invalid (it is not sent, and the result says why).
fn whole_url(t: &Template, ctx: &RenderContext<'_>) -> String {
    let text = t.render(ctx, Escape::None).trim().to_string();
    let source = t.single_placeholder().map(|p| p.source()).unwrap_or_default();
    let problem = match reqwest::Url::parse(&text) {
        _ if text.is_empty() => Some("is empty".to_string()),
        Err(e) => Some(format!("is not a URL ({e})")),
        Ok(u) if !matches!(u.scheme(), "http" | "https") => {
            Some(format!("has the scheme {:?}, not http or https", u.scheme()))
        }
        Ok(u) if u.host_str().is_none_or(str::is_empty) => Some("has no host".to_string()),
        Ok(u) if !u.username().is_empty() || u.password().is_some() => Some("carries credentials".to_string()),
        Ok(_) => None,
    };
    if let Some(problem) = problem {
        ctx.refuse(format!("the connection URL {source} {problem}"));
    }
    text
}

fn set_headers(headers: &mut Vec<(String, String)>, extra: &[(String, Template)], ctx: &RenderContext<'_>) {
    for (k, t) in extra {
        set_header(headers, k, t.render(ctx, Escape::Header));
    }
}

/// The attribute codes a chat action lists for the event's class (or its nearest ancestor
/// with a list).
pub fn presentation_codes<'a>(
    from: AttributesFrom,
    event: &crate::event::Event,
    presentation: &'a BTreeMap<String, PresentationLists>,
) -> &'a [String] {
    if from == AttributesFrom::None {
        return &[];
    }
    std::iter::once(&event.class)
        .chain(event.ancestors.iter())
        .find_map(|class| presentation.get(class))
        .map(|lists| match from {
            AttributesFrom::List => lists.list.as_slice(),
            AttributesFrom::Slack => lists.slack.as_slice(),
            AttributesFrom::Msteams => lists.msteams.as_slice(),
            AttributesFrom::None => &[],
        })
        .unwrap_or(&[])
}

/// Every reason an answer may give: a reason becomes the `reason` label of
/// `hookbridge_dead_letters_total`, so it comes from this fixed list, or is `other`.
pub fn answer_reasons() -> impl Iterator<Item = &'static str> {
    ["itop_error", "itop_invalid_answer", "other"].into_iter().chain(slack::SLACK_ERRORS.iter().map(|(c, _)| *c))
}

/// What an answer means beyond its HTTP status, per action type. The reason is one of
/// [`answer_reasons`], whatever the remote service wrote.
pub fn answer_error(kind: ActionKind, status: u16, body: &[u8]) -> Option<AnswerError> {
    let found = match kind {
        ActionKind::Itop => itop::answer_error(status, body),
        ActionKind::Slack => slack::answer_error(status, body),
        _ => None,
    };
    found.map(|mut e| {
        if !answer_reasons().any(|r| r == e.reason) {
            e.reason = "other".into();
        }
        e
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_reasons_come_from_a_fixed_list() {
        // Remote bodies of every kind: known codes, random words, long and odd ones.
        let bodies: [&[u8]; 8] = [
            b"invalid_payload",
            b"channel_not_found some detail",
            b"zzq_random_code_1",
            b"another_unheard_of_error",
            b"a_b_c_d_e_f_g",
            b"x",
            b"{\"code\": 100, \"message\": \"no\"}",
            b"not json at all",
        ];
        let mut reasons = std::collections::BTreeSet::new();
        for kind in [ActionKind::Slack, ActionKind::Itop, ActionKind::Webhook] {
            for (i, body) in bodies.iter().enumerate() {
                let status = if kind == ActionKind::Itop { 200 } else { 400 + i as u16 };
                if let Some(e) = answer_error(kind, status, body) {
                    assert!(answer_reasons().any(|r| r == e.reason), "{kind:?}: {}", e.reason);
                    reasons.insert(e.reason);
                }
            }
        }
        let long = "q_".repeat(10_000);
        let e = answer_error(ActionKind::Slack, 400, long.as_bytes()).unwrap();
        assert_eq!(e.reason, "other");
        assert!(e.detail.chars().count() <= 300);
        assert_eq!(
            reasons.into_iter().collect::<Vec<_>>(),
            ["channel_not_found", "invalid_payload", "itop_error", "itop_invalid_answer", "other"]
        );
    }
}
