//! Google Chat incoming webhook: plain text `{"text": …}`, optionally threaded.

use serde_json::json;

use crate::config_file::raw::GoogleChatFields;
use crate::config_file::Problems;
use crate::template::{object_name, Escape, RenderContext, Template};

use super::template_field;
use crate::rich_text::chat::{mark_value, message, truncate, Dialect, Unit};

/// Google Chat refuses messages above this many bytes; the whole body is kept under it.
pub const MAX_MESSAGE_BYTES: usize = 32_000;
/// Thread keys are short identifiers; a longer one is cut.
const MAX_THREAD_KEY: usize = 1_000;

/// A compiled Google Chat action.
#[derive(Debug)]
pub struct GoogleChatSpec {
    /// Message text; markup is stripped.
    pub message: Template,
    /// Messages with the same key go to the same thread.
    pub thread_key: Option<Template>,
}

/// Checks and compiles a Google Chat action's fields.
pub fn compile(place: &str, raw: &GoogleChatFields, problems: &mut Problems) -> Option<GoogleChatSpec> {
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

/// The JSON body: plain text (markup stripped, links as `text (url)`; in values, what
/// Google Chat would read as formatting, a link or a mention neutralised), cut so the
/// whole body stays within the size Google Chat accepts.
pub fn body(spec: &GoogleChatSpec, ctx: &RenderContext<'_>) -> (Option<String>, Vec<u8>) {
    let text =
        message(&spec.message.render(ctx, Escape::Markup(mark_value)), Dialect::GoogleChat, || object_name(ctx.event));
    let thread = spec.thread_key.as_ref().map(|t| {
        let key = t.render(ctx, Escape::None);
        json!({ "threadKey": truncate(key.trim(), MAX_THREAD_KEY, Unit::JsonBytes, Dialect::Plain) })
    });
    // Everything but the text, as it will be written: `{"text":"",…}`.
    let mut payload = json!({ "text": "" });
    if let Some(thread) = thread {
        payload["thread"] = thread;
    }
    let overhead = serde_json::to_vec(&payload).map_or(0, |b| b.len());
    payload["text"] = json!(truncate(&text, MAX_MESSAGE_BYTES - overhead, Unit::JsonBytes, Dialect::GoogleChat));
    (Some("application/json; charset=UTF-8".into()), serde_json::to_vec(&payload).unwrap_or_default())
}
