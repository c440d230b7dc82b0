//! Microsoft Teams: an Adaptive Card for Workflows webhooks (the default, since Office 365
//! connectors are retired), or a legacy MessageCard for connectors that still run. Both
//! carry the title, the message (HTML turned into Teams' Markdown subset), the attribute
//! list as facts, who made the change and link buttons, and stay under Teams' 28 KB.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::config_file::raw::{ActionKind, PresentationLists, TeamsFields, TeamsFormat};
use crate::config_file::Problems;
use crate::template::{object_name, Escape, RenderContext, Template};

use super::chat::{actor_name, attribute_rows, buttons, Button, ButtonKind};
use super::{compile_chat, template_field, ChatSpec};
use crate::rich_text::chat::{convert, mark_value, message, truncate, value_within, Dialect, Unit};

/// Teams refuses messages above 28 KB; this leaves room for what the service adds.
pub const MAX_PAYLOAD_BYTES: usize = 28_000;
/// Adaptive Card actions shown in the card's own action bar; more go into action sets
/// of this size in the body (the renderer's default `maxActions`).
pub const MAX_CARD_ACTIONS: usize = 5;
/// A MessageCard shows at most this many `potentialAction` buttons.
pub const MAX_CONNECTOR_ACTIONS: usize = 4;

const MAX_TITLE: usize = 1_000;
const MAX_FACT_TITLE: usize = 150;
const MAX_FACT_VALUE: usize = 2_000;
const MAX_BUTTON_TEXT: usize = 75;
const MAX_SUMMARY: usize = 200;
const MAX_URL: usize = 2_048;
/// The message is cut before facts are dropped, but never below this many bytes.
const MIN_MESSAGE_BYTES: usize = 1_000;

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
    raw: &TeamsFields,
    presentation: &BTreeMap<String, PresentationLists>,
    problems: &mut Problems,
) -> Option<TeamsSpec> {
    let before = problems.mark();
    let chat = compile_chat(place, ActionKind::Teams, &raw.chat, presentation, problems);
    let title = raw.title.as_deref().and_then(|t| template_field(place, "title", Some(t), problems));
    let image_url = raw.image_url.as_deref().and_then(|t| template_field(place, "image_url", Some(t), problems));
    if let Some(c) = &raw.highlight_color {
        let hex = c.strip_prefix('#').unwrap_or(c);
        if !(matches!(hex.len(), 3 | 6) && hex.bytes().all(|b| b.is_ascii_hexdigit())) {
            problems.add(format!("{place}.highlight_color"), format!("{c:?} is not a hex colour such as #0078D7"));
        }
    }
    if problems.added_since(before) {
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
    presentation: &BTreeMap<String, PresentationLists>,
) -> (Option<String>, Vec<u8>) {
    let mut content = Content::collect(spec, ctx, presentation);
    let payload = content.fit();
    (Some("application/json".into()), serde_json::to_vec(&payload).unwrap_or_default())
}

/// What a card shows, already converted to the format's markup.
struct Content {
    format: TeamsFormat,
    dialect: Dialect,
    title: String,
    summary: String,
    message: String,
    image: Option<String>,
    facts: Vec<(String, String)>,
    /// Facts left out to stay under the size limit.
    facts_dropped: usize,
    user: Option<String>,
    buttons: Vec<Button>,
    /// `RRGGBB`.
    color: Option<String>,
}

impl Content {
    fn collect(
        spec: &TeamsSpec,
        ctx: &RenderContext<'_>,
        presentation: &BTreeMap<String, PresentationLists>,
    ) -> Content {
        let event = ctx.event;
        let format = spec.format;
        // MessageCard formats its text only; titles and fact names are plain there.
        let (dialect, label_dialect) = match format {
            TeamsFormat::AdaptiveCard => (Dialect::Teams, Dialect::Teams),
            TeamsFormat::MessageCard => (Dialect::TeamsConnector, Dialect::Plain),
        };
        let rendered = spec.chat.message.render(ctx, Escape::Markup(mark_value));
        let message = message(&rendered, dialect, || object_name(event));
        let rendered_title = spec.title.as_ref().map(|t| t.render(ctx, Escape::Markup(mark_value))).unwrap_or_default();
        // A title and a summary are one line, whatever the attributes in them hold.
        let one_line = |text: String| text.split_whitespace().collect::<Vec<_>>().join(" ");
        let title = truncate(&one_line(convert(&rendered_title, label_dialect)), MAX_TITLE, Unit::Utf16, label_dialect);
        let mut summary = one_line(convert(&rendered_title, Dialect::Plain));
        if summary.is_empty() {
            summary = one_line(convert(&rendered, Dialect::Plain));
        }
        if summary.is_empty() {
            summary = one_line(object_name(event));
        }
        let summary = truncate(&summary, MAX_SUMMARY, Unit::Utf16, Dialect::Plain);
        let facts = attribute_rows(&spec.chat, event, presentation)
            .into_iter()
            .map(|row| {
                let shown = value_within(&row.value, MAX_FACT_VALUE, Unit::Utf16, dialect);
                let shown = if shown.is_empty() { "—".to_string() } else { shown };
                (value_within(&row.label, MAX_FACT_TITLE, Unit::Utf16, label_dialect), shown)
            })
            .collect();
        let user = spec
            .chat
            .user_info
            .then(|| actor_name(event))
            .flatten()
            .map(|name| value_within(&name, MAX_FACT_TITLE, Unit::Utf16, label_dialect));
        let buttons = buttons(&spec.chat, event)
            .into_iter()
            .filter(|b| b.url.len() <= MAX_URL)
            .map(|b| Button { label: truncate(&b.label, MAX_BUTTON_TEXT, Unit::Utf16, Dialect::Plain), ..b })
            .collect();
        Content {
            format,
            dialect,
            title,
            summary,
            message,
            image: spec.image_url.as_ref().and_then(|t| image_url(t, ctx)),
            facts,
            facts_dropped: 0,
            user,
            buttons,
            color: spec.highlight_color.as_deref().and_then(hex_color),
        }
    }

    /// The payload, cut until it fits: the message first (down to a readable length),
    /// then facts from the end, then the rest.
    fn fit(&mut self) -> Value {
        loop {
            let payload = self.payload();
            let size = serde_json::to_vec(&payload).map_or(0, |b| b.len());
            if size <= MAX_PAYLOAD_BYTES {
                return payload;
            }
            let over = size - MAX_PAYLOAD_BYTES;
            let message = Unit::JsonBytes.of(&self.message);
            if message > MIN_MESSAGE_BYTES {
                let target = message.saturating_sub(over + 16).max(MIN_MESSAGE_BYTES);
                self.message = truncate(&self.message, target, Unit::JsonBytes, self.dialect);
            } else if !self.facts.is_empty() {
                // Drop enough facts at once to cover what is over (each costs its text
                // and some JSON around it).
                let mut freed = 0;
                while freed < over && !self.facts.is_empty() {
                    if let Some((name, value)) = self.facts.pop() {
                        freed += Unit::JsonBytes.of(&name) + Unit::JsonBytes.of(&value) + 24;
                        self.facts_dropped += 1;
                    }
                }
            } else if Unit::JsonBytes.of(&self.title) > MAX_SUMMARY {
                self.title = truncate(&self.title, MAX_SUMMARY, Unit::JsonBytes, self.dialect);
            } else if self.image.is_some() {
                self.image = None;
            } else if !self.buttons.is_empty() {
                self.buttons.clear();
            } else if self.user.is_some() {
                self.user = None;
            } else if message > 16 {
                self.message = truncate(&self.message, message / 2, Unit::JsonBytes, self.dialect);
            } else {
                return payload;
            }
        }
    }

    fn shown_facts(&self) -> Vec<(String, String)> {
        let mut facts = self.facts.clone();
        if self.facts_dropped > 0 {
            facts.push(("…".to_string(), format!("{} more", self.facts_dropped)));
        }
        facts
    }

    fn payload(&self) -> Value {
        match self.format {
            TeamsFormat::AdaptiveCard => self.adaptive_card(),
            TeamsFormat::MessageCard => self.message_card(),
        }
    }

    fn adaptive_card(&self) -> Value {
        let text_block = |text: &str| json!({"type": "TextBlock", "text": text, "wrap": true});
        let title = (!self.title.trim().is_empty()).then(
            || json!({"type": "TextBlock", "text": self.title, "weight": "Bolder", "size": "Medium", "wrap": true}),
        );
        let mut body = Vec::new();
        if let Some(rgb) = self.color.as_deref() {
            // Adaptive Cards name colours only by style; the exact one is a band across the
            // top of the card: a container whose background image is one pixel of that
            // colour, repeated. Hosts that show no background image show the band in the
            // nearest container style instead.
            body.push(json!({
                "type": "Container",
                "style": container_style(rgb),
                "bleed": true,
                "minHeight": "6px",
                "backgroundImage": {"url": pixel_png_data_uri(rgb), "fillMode": "Repeat"},
                "items": [{"type": "TextBlock", "text": " ", "size": "Small", "spacing": "None"}]
            }));
        }
        body.extend(title);
        body.push(text_block(&self.message));
        if let Some(url) = &self.image {
            body.push(json!({"type": "Image", "url": url, "altText": self.summary}));
        }
        let facts = self.shown_facts();
        if !facts.is_empty() {
            let facts: Vec<Value> = facts.iter().map(|(t, v)| json!({"title": t, "value": v})).collect();
            body.push(json!({"type": "FactSet", "facts": facts}));
        }
        if let Some(user) = &self.user {
            body.push(json!({"type": "TextBlock", "text": user, "size": "Small", "isSubtle": true, "wrap": true}));
        }
        let actions: Vec<Value> = self
            .buttons
            .iter()
            .map(|b| {
                let mut action = json!({"type": "Action.OpenUrl", "title": b.label, "url": b.url});
                if b.kind == ButtonKind::Delete {
                    action["style"] = json!("destructive");
                }
                action
            })
            .collect();
        let mut card = json!({
            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "type": "AdaptiveCard",
            "version": "1.4",
            "body": body,
            "msteams": {"width": "Full"},
        });
        if actions.len() <= MAX_CARD_ACTIONS {
            if !actions.is_empty() {
                card["actions"] = Value::Array(actions);
            }
        } else if let Some(body) = card["body"].as_array_mut() {
            for chunk in actions.chunks(MAX_CARD_ACTIONS) {
                body.push(json!({"type": "ActionSet", "actions": chunk}));
            }
        }
        json!({
            "type": "message",
            "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": null,
                "content": card,
            }]
        })
    }

    fn message_card(&self) -> Value {
        let mut card = Map::new();
        card.insert("@type".into(), json!("MessageCard"));
        card.insert("@context".into(), json!("https://schema.org/extensions"));
        if let Some(color) = &self.color {
            card.insert("themeColor".into(), json!(color));
        }
        card.insert("summary".into(), json!(self.summary));
        if !self.title.trim().is_empty() {
            card.insert("title".into(), json!(self.title));
        }
        card.insert("text".into(), json!(self.message));
        let mut section = Map::new();
        if let Some(user) = &self.user {
            section.insert("activitySubtitle".into(), json!(user));
        }
        let facts = self.shown_facts();
        if !facts.is_empty() {
            section.insert("facts".into(), facts.iter().map(|(n, v)| json!({"name": n, "value": v})).collect());
        }
        if let Some(url) = &self.image {
            section.insert("images".into(), json!([{"image": url}]));
        }
        if !section.is_empty() {
            card.insert("sections".into(), json!([section]));
        }
        if !self.buttons.is_empty() {
            let actions: Vec<Value> = self
                .buttons
                .iter()
                .take(MAX_CONNECTOR_ACTIONS)
                .map(|b| json!({"@type": "OpenUri", "name": b.label, "targets": [{"os": "default", "uri": b.url}]}))
                .collect();
            card.insert("potentialAction".into(), Value::Array(actions));
        }
        Value::Object(card)
    }
}

/// The image URL: placeholders percent-encoded as in any URL, unless the placeholder is
/// the whole URL; anything but an absolute http(s) URL is left out.
fn image_url(t: &Template, ctx: &RenderContext<'_>) -> Option<String> {
    [Escape::Url, Escape::None].into_iter().find_map(|escape| {
        let url = reqwest::Url::parse(t.render(ctx, escape).trim()).ok()?;
        (matches!(url.scheme(), "http" | "https") && url.as_str().len() <= MAX_URL).then(|| url.to_string())
    })
}

/// A one-pixel PNG of `rgb` (`RRGGBB`) as a `data:` URI.
fn pixel_png_data_uri(rgb: &str) -> String {
    use base64::Engine as _;
    let byte = |i: usize| u8::from_str_radix(rgb.get(i..i + 2).unwrap_or("00"), 16).unwrap_or(0);
    // One scanline: filter byte 0, then R, G, B.
    let raw = [0, byte(0), byte(2), byte(4)];
    // zlib stream with one stored block (no compression) and its Adler-32.
    let (mut a, mut b) = (1u32, 0u32);
    for x in raw {
        a = (a + u32::from(x)) % 65521;
        b = (b + a) % 65521;
    }
    let mut zlib = vec![0x78, 0x01, 0x01, raw.len() as u8, 0x00, !(raw.len() as u8), 0xFF];
    zlib.extend_from_slice(&raw);
    zlib.extend_from_slice(&((b << 16) | a).to_be_bytes());
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    // Width 1, height 1, bit depth 8, colour type 2 (RGB), default compression, filter, no interlace.
    let ihdr = [0, 0, 0, 1, 0, 0, 0, 1, 8, 2, 0, 0, 0];
    for (kind, data) in [(b"IHDR", &ihdr[..]), (b"IDAT", &zlib[..]), (b"IEND", &[][..])] {
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = png.len();
        png.extend_from_slice(kind);
        png.extend_from_slice(data);
        let crc = crc32(&png[start..]);
        png.extend_from_slice(&crc.to_be_bytes());
    }
    format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(png))
}

/// CRC-32 (IEEE), as PNG chunks carry it.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// `#RGB` or `#RRGGBB` as `RRGGBB`.
fn hex_color(color: &str) -> Option<String> {
    let hex = color.trim().trim_start_matches('#');
    let full: String = match hex.len() {
        3 => hex.chars().flat_map(|c| [c, c]).collect(),
        6 => hex.to_string(),
        _ => return None,
    };
    full.bytes().all(|b| b.is_ascii_hexdigit()).then(|| full.to_ascii_uppercase())
}

/// The Adaptive Card container style nearest to a colour: reds `attention`, oranges and
/// yellows `warning`, greens `good`, blues and purples `accent`, greys `emphasis`.
fn container_style(rgb: &str) -> &'static str {
    let channel = |i: usize| u8::from_str_radix(&rgb[i..i + 2], 16).map_or(0.0, |v| f64::from(v) / 255.0);
    let (r, g, b) = (channel(0), channel(2), channel(4));
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    let delta = max - min;
    let lightness = (max + min) / 2.0;
    let saturation = if delta == 0.0 { 0.0 } else { delta / (1.0 - (2.0 * lightness - 1.0).abs()) };
    if saturation < 0.15 || delta < 0.08 {
        return "emphasis";
    }
    let hue = if max == r {
        60.0 * ((g - b) / delta).rem_euclid(6.0)
    } else if max == g {
        60.0 * ((b - r) / delta + 2.0)
    } else {
        60.0 * ((r - g) / delta + 4.0)
    };
    match hue {
        h if !(15.0..345.0).contains(&h) => "attention",
        h if h < 70.0 => "warning",
        h if h < 170.0 => "good",
        _ => "accent",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exact_colour_is_a_valid_one_pixel_png() {
        use base64::Engine as _;
        let uri = pixel_png_data_uri("FF8800");
        let png = base64::engine::general_purpose::STANDARD
            .decode(uri.strip_prefix("data:image/png;base64,").unwrap())
            .unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        // Every chunk's CRC checks out, and the pixel is #FF8800.
        let mut at = 8;
        while at < png.len() {
            let len = u32::from_be_bytes(png[at..at + 4].try_into().unwrap()) as usize;
            let crc = u32::from_be_bytes(png[at + 8 + len..at + 12 + len].try_into().unwrap());
            assert_eq!(crc32(&png[at + 4..at + 8 + len]), crc);
            if &png[at + 4..at + 8] == b"IDAT" {
                // Stored block: header (2), block header (5), then filter byte and R, G, B.
                assert_eq!(&png[at + 8 + 7..at + 8 + 11], &[0, 0xFF, 0x88, 0x00]);
            }
            at += 12 + len;
        }
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn colours() {
        assert_eq!(hex_color("#e74c3c").as_deref(), Some("E74C3C"));
        assert_eq!(hex_color("#0af").as_deref(), Some("00AAFF"));
        assert_eq!(hex_color("nope"), None);
        for (hex, style) in [
            ("E74C3C", "attention"),
            ("FF0000", "attention"),
            ("F39C12", "warning"),
            ("F1C40F", "warning"),
            ("2ECC71", "good"),
            ("0078D7", "accent"),
            ("8E44AD", "accent"),
            ("808080", "emphasis"),
            ("FFFFFF", "emphasis"),
        ] {
            assert_eq!(container_style(hex), style, "{hex}");
        }
    }
}
