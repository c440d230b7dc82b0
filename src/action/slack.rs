//! Slack incoming webhook, Block Kit: the message as an mrkdwn section, the object's
//! attributes as section fields, who made the change as a context block, and buttons
//! (modify, delete, transitions) in actions blocks, always within Slack's limits so a big
//! object is cut visibly instead of being refused.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::config_file::raw::PresentationLists;
use crate::template::{object_name, Escape, RenderContext};

use super::chat::{actor_name, attribute_rows, buttons, AttributeRow, ButtonKind};
use super::{AnswerError, ChatSpec};
use crate::rich_text::chat::{mark_value, message, truncate, value_within, Dialect, Unit};

/// Longest `text` of a section block.
pub const MAX_SECTION_TEXT: usize = 3_000;
/// Longest text of one section field.
pub const MAX_FIELD_TEXT: usize = 2_000;
/// Fields one section may hold.
pub const MAX_FIELDS_PER_SECTION: usize = 10;
/// Longest button label.
pub const MAX_BUTTON_TEXT: usize = 75;
/// Longest button URL.
pub const MAX_BUTTON_URL: usize = 3_000;
/// Blocks one message may hold.
pub const MAX_BLOCKS: usize = 50;
/// Elements one actions block may hold.
pub const MAX_ACTION_ELEMENTS: usize = 25;
/// Characters of text one message may hold, every block together.
pub const MAX_TOTAL_TEXT: usize = 40_000;

/// The top-level `text` is what notifications show: one screen is plenty.
const MAX_FALLBACK_TEXT: usize = 3_000;
/// Attribute labels and the actor's name are short by nature; a longer one is cut here.
const MAX_LABEL: usize = 150;
/// Buttons beyond this many are not shown (four actions blocks).
const MAX_BUTTONS: usize = 4 * MAX_ACTION_ELEMENTS;
/// Room kept for the "… N more" field when attributes are left out.
const MORE_NOTE_ROOM: usize = 100;
/// A field is only worth adding with at least this much text left.
const MIN_FIELD_ROOM: usize = MAX_LABEL + 60;

/// The JSON body.
pub fn body(
    spec: &ChatSpec,
    ctx: &RenderContext<'_>,
    presentation: &BTreeMap<String, PresentationLists>,
) -> (Option<String>, Vec<u8>) {
    let payload = payload(spec, ctx, presentation);
    (Some("application/json".into()), serde_json::to_vec(&payload).unwrap_or_default())
}

fn payload(spec: &ChatSpec, ctx: &RenderContext<'_>, presentation: &BTreeMap<String, PresentationLists>) -> Value {
    let event = ctx.event;
    let rendered = spec.message.render(ctx, Escape::Markup(mark_value));
    let name = || object_name(event);
    let fallback =
        truncate(&message(&rendered, Dialect::SlackPlain, name), MAX_FALLBACK_TEXT, Unit::Utf16, Dialect::SlackPlain);
    let message = truncate(&message(&rendered, Dialect::Slack, name), MAX_SECTION_TEXT, Unit::Utf16, Dialect::Slack);

    let user = spec
        .user_info
        .then(|| actor_name(event))
        .flatten()
        .map(|name| value_within(&name, MAX_LABEL, Unit::Utf16, Dialect::Slack))
        .filter(|name| !name.is_empty());
    let buttons: Vec<Value> = buttons(spec, event)
        .into_iter()
        .filter(|b| b.url.len() <= MAX_BUTTON_URL)
        .take(MAX_BUTTONS)
        .map(|b| {
            let mut button = json!({
                "type": "button",
                "action_id": b.id,
                "text": {"type": "plain_text", "text": truncate(&b.label, MAX_BUTTON_TEXT, Unit::Utf16, Dialect::Plain), "emoji": true},
                "url": b.url,
            });
            if b.kind == ButtonKind::Delete {
                button["style"] = json!("danger");
            }
            button
        })
        .collect();
    let action_blocks = buttons.len().div_ceil(MAX_ACTION_ELEMENTS);

    let mut text_left = MAX_TOTAL_TEXT
        .saturating_sub(utf16_len(&message) + utf16_len(&fallback))
        .saturating_sub(user.as_deref().map_or(0, utf16_len))
        .saturating_sub(buttons.iter().map(|b| b["text"]["text"].as_str().map_or(0, utf16_len)).sum());
    let field_sections = MAX_BLOCKS - 1 - usize::from(user.is_some()) - action_blocks;
    let fields =
        fields(&attribute_rows(spec, event, presentation), field_sections * MAX_FIELDS_PER_SECTION, &mut text_left);

    let mut blocks = vec![json!({"type": "section", "text": {"type": "mrkdwn", "text": message}})];
    for chunk in fields.chunks(MAX_FIELDS_PER_SECTION) {
        let fields: Vec<Value> = chunk.iter().map(|text| json!({"type": "mrkdwn", "text": text})).collect();
        blocks.push(json!({"type": "section", "fields": fields}));
    }
    if let Some(user) = user {
        blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": user}]}));
    }
    for (i, chunk) in buttons.chunks(MAX_ACTION_ELEMENTS).enumerate() {
        let block_id = if i == 0 { "buttons".to_string() } else { format!("buttons_{}", i + 1) };
        blocks.push(json!({"type": "actions", "block_id": block_id, "elements": chunk}));
    }
    json!({"text": fallback, "blocks": blocks})
}

/// The attribute list as field texts (`*Label*\nvalue`), within `max` fields and the text
/// left in the message; what does not fit ends in a "… N more" field.
fn fields(rows: &[AttributeRow], max: usize, text_left: &mut usize) -> Vec<String> {
    let mut out = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let more = rows.len() - i;
        let room = (*text_left).saturating_sub(MORE_NOTE_ROOM).min(MAX_FIELD_TEXT);
        if (out.len() + 1 == max && more > 1) || room < MIN_FIELD_ROOM {
            if max > out.len() && *text_left >= MORE_NOTE_ROOM {
                out.push(format!("_… {more} more_"));
            }
            break;
        }
        let label = value_within(&row.label, MAX_LABEL, Unit::Utf16, Dialect::Slack);
        let shown = value_within(&row.value, MAX_FIELD_TEXT, Unit::Utf16, Dialect::Slack);
        let shown = if shown.is_empty() { "—".to_string() } else { shown };
        let text = truncate(&format!("*{label}*\n{shown}"), room, Unit::Utf16, Dialect::Slack);
        *text_left -= utf16_len(&text);
        out.push(text);
    }
    out
}

fn utf16_len(text: &str) -> usize {
    text.encode_utf16().count()
}

/// What Slack's error bodies mean, for people reading a delivery result. These codes are
/// the only reasons an answer gives; any other becomes `other` (with the body in the
/// detail), since a reason is a metric label and must come from a bounded set.
pub const SLACK_ERRORS: [(&str, &str); 18] = [
    ("rate_limited", "Slack is limiting the rate of posts to this webhook"),
    ("invalid_arguments", "the request is not one Slack accepts"),
    ("invalid_payload", "the request body is not a message Slack understands"),
    ("invalid_blocks", "a block is malformed or over a Block Kit limit"),
    ("invalid_blocks_format", "the blocks are not a JSON array of blocks"),
    ("no_text", "the message has no text"),
    ("missing_text_or_fallback_or_attachments", "the message has no text"),
    ("too_many_attachments", "the message has too many attachments"),
    ("channel_not_found", "the webhook's channel no longer exists"),
    ("channel_is_archived", "the webhook's channel is archived"),
    ("action_prohibited", "a workspace admin restricted posting to this channel"),
    ("posting_to_general_channel_denied", "only admins may post to this channel"),
    ("user_not_found", "the webhook's user no longer exists"),
    ("invalid_token", "the webhook URL is no longer valid"),
    ("no_service", "the webhook is disabled, removed or invalid"),
    ("no_service_id", "the webhook URL is incomplete"),
    ("no_team", "the webhook's workspace no longer exists"),
    ("team_disabled", "the webhook's workspace is disabled"),
];

/// Longest part of an error body kept in a result's detail.
const MAX_DETAIL: usize = 300;

/// Slack answers `200 ok`, or an error code such as `invalid_payload` or
/// `channel_not_found` in a plain-text body (with 400, 403, 404 or 410). A known code
/// becomes the reason, with what it means in the detail; an unknown one is `other`, with
/// the body (cut) in the detail. The HTTP status still decides whether the delivery is
/// retried.
pub fn answer_error(status: u16, body: &[u8]) -> Option<AnswerError> {
    let text = String::from_utf8_lossy(body).trim().to_string();
    if (200..300).contains(&status) && (text == "ok" || text.is_empty()) {
        return None;
    }
    let code = text.split_whitespace().next().unwrap_or("");
    if code.is_empty() || !code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        return None;
    }
    let shown: String = text.chars().take(MAX_DETAIL).collect();
    Some(match SLACK_ERRORS.iter().find(|(c, _)| *c == code) {
        Some((known, meaning)) if text == code => {
            AnswerError { reason: known.to_string(), detail: format!("{code}: {meaning}") }
        }
        Some((known, meaning)) => AnswerError { reason: known.to_string(), detail: format!("{shown} ({meaning})") },
        None => AnswerError { reason: "other".into(), detail: shown },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_errors() {
        assert_eq!(answer_error(200, b"ok"), None);
        assert_eq!(answer_error(200, b""), None);
        let e = answer_error(404, b"channel_not_found").unwrap();
        assert_eq!(e.reason, "channel_not_found");
        assert_eq!(e.detail, "channel_not_found: the webhook's channel no longer exists");
        let e = answer_error(400, b"invalid_blocks some detail").unwrap();
        assert_eq!(
            (e.reason.as_str(), e.detail.as_str()),
            ("invalid_blocks", "invalid_blocks some detail (a block is malformed or over a Block Kit limit)")
        );
        let unknown = answer_error(410, b"something_new").unwrap();
        assert_eq!((unknown.reason.as_str(), unknown.detail.as_str()), ("other", "something_new"));
        assert_eq!(answer_error(502, b"<html>Bad gateway</html>"), None);
    }
}
