//! From an event to the requests it causes: the shared step of `render`, `send` and the
//! dispatcher.

use serde::Serialize;
use serde_json::Value;

use crate::action::{build_request, BuildContext};
use crate::config::Config;
use crate::config_file::raw::ActionStatus;
use crate::event::Event;
use crate::request::{webhook_id, Request, ShownRequest};
use crate::template::RenderContext;
use crate::trigger::{match_event, ConditionError, Match};

/// What one (trigger, action) pair comes to.
#[derive(Debug, Clone)]
pub enum Planned {
    /// A request to send through the connection at this index.
    Send {
        /// The rendered request.
        request: Request,
        /// Index into `Config::connections`.
        connection: usize,
        /// Placeholders that resolved to nothing.
        missing: Vec<String>,
        /// Why the request must not be sent (a value that would change its target).
        invalid: Vec<String>,
    },
    /// Nothing is sent, for this reason (`disabled`, `no_test_connection`).
    Skip(&'static str),
}

/// Renders the request for one match.
pub fn plan(config: &Config, event: &Event, m: &Match) -> Planned {
    let action = &config.actions[m.action];
    let trigger = &config.triggers[m.trigger];
    if trigger.skips_mention(m.mention) {
        return Planned::Skip("too_many_mentions");
    }
    let connection = match action.status {
        ActionStatus::Disabled => return Planned::Skip("disabled"),
        ActionStatus::Test => match action.test_connection {
            Some(c) => c,
            None => return Planned::Skip("no_test_connection"),
        },
        ActionStatus::Enabled => action.connection,
    };
    let mentioned = m.mention.and_then(|i| event.mentions.get(i));
    let ctx = RenderContext::new(event, &trigger.name, &action.name, mentioned);
    let build =
        BuildContext { render: &ctx, connection: &config.connections[connection], presentation: &config.presentation };
    let mut request = build_request(action, &build, &webhook_id(&event.id, &action.name, m.mention));
    if let Some(trace) = &event.trace {
        // One span per delivery (the same across its retries), a child of the event's.
        crate::request::set_header(&mut request.headers, "traceparent", trace.child(rand::random()));
    }
    Planned::Send { request, connection, missing: ctx.missing(), invalid: ctx.invalid() }
}

/// One entry of `render`'s output.
#[derive(Debug, Serialize)]
pub struct RenderedMatch {
    /// Trigger name.
    pub trigger: String,
    /// Action name.
    pub action: String,
    /// Action type.
    pub r#type: &'static str,
    /// Connection used, when something is sent.
    pub connection: Option<String>,
    /// Why nothing is sent, when nothing is.
    pub skipped: Option<&'static str>,
    /// The request, secrets masked.
    pub request: Option<ShownRequest>,
    /// Placeholders that resolved to nothing.
    pub missing_placeholders: Vec<String>,
    /// How the connection URL is written: `fixed`, `template` (values percent-encoded) or
    /// `whole_url_from_placeholder` (checked per request).
    pub url_form: Option<&'static str>,
    /// Why the request would not be sent (a URL from the object that is not an http(s)
    /// URL, a refused destination, a value that changes the path).
    pub refused: Vec<String>,
}

/// `render`'s whole output for one event.
#[derive(Debug, Serialize)]
pub struct RenderOutput {
    /// The event's id.
    pub event_id: String,
    /// `class::key`.
    pub object: String,
    /// Matched pairs, in order.
    pub matched: Vec<RenderedMatch>,
    /// Conditions that could not be evaluated.
    pub condition_errors: Vec<Value>,
}

/// Renders everything `event` would cause, optionally for one action only.
pub fn render_event(config: &Config, event: &Event, only_action: Option<&str>) -> RenderOutput {
    let (matches, errors) = match_event(&config.triggers, event);
    let matched = matches
        .iter()
        .filter(|m| only_action.is_none_or(|a| config.actions[m.action].name == a))
        .map(|m| {
            let action = &config.actions[m.action];
            let mut url_form = None;
            let mut refused = Vec::new();
            let (connection, skipped, request, missing) = match plan(config, event, m) {
                Planned::Send { request, connection, missing, invalid } => {
                    let mut request = request;
                    let conn = &config.connections[connection];
                    request.stamp(&conn.signing_keys, chrono::Utc::now().timestamp());
                    url_form = Some(conn.url_form.as_str());
                    refused = invalid;
                    // The destination policy as `run` applies it to an address in the URL.
                    let policy =
                        conn.policy(crate::net::Policy { allow_private: config.delivery.allow_private_networks });
                    if let Ok(url) = reqwest::Url::parse(&request.url) {
                        if let Err(e) = policy.check_url(&url) {
                            refused.push(e.to_string());
                        }
                    }
                    (Some(conn.name.clone()), None, Some(request.shown()), missing)
                }
                Planned::Skip(reason) => (None, Some(reason), None, Vec::new()),
            };
            RenderedMatch {
                trigger: config.triggers[m.trigger].name.clone(),
                action: action.name.clone(),
                r#type: action.kind.as_str(),
                connection,
                skipped,
                request,
                missing_placeholders: missing,
                url_form,
                refused,
            }
        })
        .collect();
    RenderOutput {
        event_id: event.id.clone(),
        object: event.object_key(),
        matched,
        condition_errors: errors.iter().map(condition_error_json).collect(),
    }
}

fn condition_error_json(e: &ConditionError) -> Value {
    serde_json::json!({"trigger": e.trigger, "error": e.message})
}
