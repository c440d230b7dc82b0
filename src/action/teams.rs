//! Microsoft Teams: an Adaptive Card for Workflows webhooks, or a legacy MessageCard.

use std::collections::BTreeMap;

use serde_json::json;

use crate::config::raw::{ActionConfig, PresentationLists, TeamsFormat};
use crate::config::Problems;
use crate::markup;
use crate::template::{Escape, RenderContext, Template};

use super::{compile_chat, template_field, ChatSpec};

/// A compiled Teams action.
#[derive(Debug)]
pub struct TeamsSpec {
    /// Message, fields and buttons.
    pub chat: ChatSpec,
    /// Card title.
    pub title: Option<Template>,
    /// Accent colour, `#RRGGBB`.
    pub highlight_color: Option<String>,
    /// Image shown in the card.
    pub image_url: Option<Template>,
    /// Payload format.
    pub format: TeamsFormat,
}

/// Checks and compiles a Teams action's fields.
pub fn compile(
    place: &str,
    raw: &ActionConfig,
    presentation: &BTreeMap<String, PresentationLists>,
    problems: &mut Problems,
) -> Option<TeamsSpec> {
    let before = problems.0.len();
    let chat = compile_chat(place, raw, presentation, problems);
    let title = raw.title.as_deref().and_then(|t| template_field(place, "title", Some(t), problems));
    let image_url = raw.image_url.as_deref().and_then(|t| template_field(place, "image_url", Some(t), problems));
    if let Some(c) = &raw.highlight_color {
        let hex = c.strip_prefix('#').unwrap_or(c);
        if !(matches!(hex.len(), 3 | 6) && hex.bytes().all(|b| b.is_ascii_hexdigit())) {
            problems.add(format!("{place}.highlight_color"), format!("{c:?} is not a hex colour such as #0078D7"));
        }
    }
    if problems.0.len() > before {
        return None;
    }
    Some(TeamsSpec {
        chat: chat?,
        title,
        highlight_color: raw.highlight_color.clone(),
        image_url,
        format: raw.format.unwrap_or_default(),
    })
}

/// The JSON body.
pub fn body(
    spec: &TeamsSpec,
    ctx: &RenderContext<'_>,
    _presentation: &BTreeMap<String, PresentationLists>,
) -> (Option<String>, Vec<u8>) {
    let text = markup::html_to_text(&spec.chat.message.render(ctx, Escape::None));
    let title = spec.title.as_ref().map(|t| t.render(ctx, Escape::None)).unwrap_or_default();
    let payload = match spec.format {
        TeamsFormat::AdaptiveCard => json!({
            "type": "message",
            "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": [
                        {"type": "TextBlock", "text": title, "weight": "Bolder", "size": "Medium", "wrap": true},
                        {"type": "TextBlock", "text": text, "wrap": true}
                    ]
                }
            }]
        }),
        TeamsFormat::MessageCard => json!({
            "@type": "MessageCard",
            "@context": "https://schema.org/extensions",
            "summary": title,
            "title": title,
            "text": text
        }),
    };
    (Some("application/json".into()), serde_json::to_vec(&payload).unwrap_or_default())
}
