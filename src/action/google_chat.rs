//! Google Chat incoming webhook: plain text `{"text": …}`, optionally threaded.

use serde_json::json;

use crate::config::raw::ActionConfig;
use crate::config::Problems;
use crate::markup;
use crate::template::{Escape, RenderContext, Template};

use super::template_field;

/// Google Chat refuses messages above this many bytes.
pub const MAX_MESSAGE_BYTES: usize = 32_000;

/// A compiled Google Chat action.
#[derive(Debug)]
pub struct GoogleChatSpec {
    /// Message text; markup is stripped.
    pub message: Template,
    /// Messages with the same key go to the same thread.
    pub thread_key: Option<Template>,
}

/// Checks and compiles a Google Chat action's fields.
pub fn compile(place: &str, raw: &ActionConfig, problems: &mut Problems) -> Option<GoogleChatSpec> {
    if raw.message.as_deref().unwrap_or("").trim().is_empty() {
        problems.add(format!("{place}.message"), "a chat action needs a message");
    }
    let thread_key = match raw.thread_key.as_deref() {
        Some(t) => Some(template_field(place, "thread_key", Some(t), problems)?),
        None => None,
    };
    Some(GoogleChatSpec { message: template_field(place, "message", raw.message.as_deref(), problems)?, thread_key })
}

/// Adds the reply option that makes `threadKey` open or continue a thread.
pub fn thread_url(url: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}messageReplyOption=REPLY_MESSAGE_FALLBACK_TO_NEW_THREAD")
}

/// The JSON body: plain text, cut to the size Google Chat accepts.
pub fn body(spec: &GoogleChatSpec, ctx: &RenderContext<'_>) -> (Option<String>, Vec<u8>) {
    let mut text = markup::html_to_text(&spec.message.render(ctx, Escape::None));
    truncate_bytes(&mut text, MAX_MESSAGE_BYTES - 64);
    let mut payload = json!({ "text": text });
    if let Some(t) = &spec.thread_key {
        payload["thread"] = json!({ "threadKey": t.render(ctx, Escape::None) });
    }
    (Some("application/json; charset=UTF-8".into()), serde_json::to_vec(&payload).unwrap_or_default())
}

/// Cuts `text` to at most `max` bytes on a character boundary, marking the cut.
pub fn truncate_bytes(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mark = "… (truncated)";
    let mut end = max.saturating_sub(mark.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(mark);
}
