//! Slack incoming webhook, Block Kit.

use std::collections::BTreeMap;

use serde_json::json;

use crate::config::raw::PresentationLists;
use crate::template::{Escape, RenderContext};

use super::{AnswerError, ChatSpec};

/// Escapes Slack mrkdwn control characters in substituted values.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The JSON body.
pub fn body(
    spec: &ChatSpec,
    ctx: &RenderContext<'_>,
    _presentation: &BTreeMap<String, PresentationLists>,
) -> (Option<String>, Vec<u8>) {
    let text = spec.message.render(ctx, Escape::Markup(escape));
    let payload = json!({
        "text": text,
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
    });
    (Some("application/json".into()), serde_json::to_vec(&payload).unwrap_or_default())
}

/// Slack answers `ok` or an error code such as `invalid_payload` in the body.
pub fn answer_error(status: u16, body: &[u8]) -> Option<AnswerError> {
    let text = String::from_utf8_lossy(body).trim().to_string();
    if (200..300).contains(&status) && (text == "ok" || text.is_empty()) {
        return None;
    }
    let code = text.split_whitespace().next().unwrap_or("");
    (!code.is_empty() && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        .then(|| AnswerError { reason: code.to_string(), detail: text.clone() })
}
