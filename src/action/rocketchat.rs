//! Rocket.Chat incoming webhook: `text` (Rocket.Chat markdown; HTML from placeholders
//! converted to it), and `alias`, `avatar`, `emoji` only when set.

use serde_json::{json, Map};

use crate::config_file::raw::RocketchatFields;
use crate::config_file::Problems;
use crate::template::{object_name, Escape, RenderContext, Template};

use super::template_field;
use crate::rich_text::chat::{mark_value, message, truncate, Dialect, Unit};

/// Rocket.Chat's default `Message_MaxAllowedSize`: longer messages are refused unless an
/// administrator raised it, so the text is cut (visibly) to this many characters.
pub const MAX_MESSAGE_CHARS: usize = 5_000;
/// An alias or emoji is a short name, an avatar a URL: longer values are cut.
const MAX_FIELD_CHARS: usize = 2_000;

/// A compiled Rocket.Chat action.
#[derive(Debug)]
pub struct RocketchatSpec {
    /// Message text (Rocket.Chat markdown).
    pub message: Template,
    /// Sender name shown instead of the webhook's.
    pub alias: Option<Template>,
    /// Avatar image URL.
    pub avatar_url: Option<Template>,
    /// Emoji used as avatar, e.g. `:ghost:`.
    pub emoji: Option<Template>,
}

/// Checks and compiles a Rocket.Chat action's fields.
pub fn compile(place: &str, raw: &RocketchatFields, problems: &mut Problems) -> Option<RocketchatSpec> {
    let before = problems.mark();
    if raw.message.as_deref().unwrap_or("").trim().is_empty() {
        problems.add(format!("{place}.message"), "a chat action needs a message");
    }
    let message = template_field(place, "message", raw.message.as_deref(), problems);
    let mut optional =
        |field: &str, v: &Option<String>| v.as_deref().and_then(|t| template_field(place, field, Some(t), problems));
    let alias = optional("alias", &raw.alias);
    let avatar_url = optional("avatar_url", &raw.avatar_url);
    let emoji = optional("emoji", &raw.emoji);
    if problems.added_since(before) {
        return None;
    }
    Some(RocketchatSpec { message: message?, alias, avatar_url, emoji })
}

/// The JSON body.
pub fn body(spec: &RocketchatSpec, ctx: &RenderContext<'_>) -> (Option<String>, Vec<u8>) {
    let text =
        message(&spec.message.render(ctx, Escape::Markup(mark_value)), Dialect::RocketChat, || object_name(ctx.event));
    let mut payload = Map::new();
    payload.insert("text".into(), json!(truncate(&text, MAX_MESSAGE_CHARS, Unit::Utf16, Dialect::RocketChat)));
    for (key, t) in [("alias", &spec.alias), ("avatar", &spec.avatar_url), ("emoji", &spec.emoji)] {
        if let Some(t) = t {
            let v = t.render(ctx, Escape::None);
            if !v.trim().is_empty() {
                payload.insert(key.into(), json!(truncate(v.trim(), MAX_FIELD_CHARS, Unit::Utf16, Dialect::Plain)));
            }
        }
    }
    (Some("application/json".into()), serde_json::to_vec(&payload).unwrap_or_default())
}
