//! The output messages of SPEC §5, as typed structs in one place: delivery results and
//! callback updates (on `responses`), dead letters (on `dead_letter`). Every message that
//! leaves hookbridge is one of these, serialized once.

use base64::Engine as _;
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::source::Coords;

/// Characters of an answer shown in a result.
pub const EXCERPT_CHARS: usize = 512;

/// `{reason, detail}` of a result that is not `delivered`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ErrorBody {
    /// Short stable label (`http_503`, `timeout`, `condition_error`, …).
    pub reason: String,
    /// What happened, for people.
    pub detail: String,
}

/// The request a result describes: method and masked URL, plus headers and body for a dry run.
#[derive(Debug, Clone, Serialize)]
pub struct RequestSummary {
    /// HTTP method.
    pub method: String,
    /// URL with its secret parts masked.
    pub url: String,
    /// Headers, secrets masked (dry run only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<Map<String, Value>>,
    /// Body as text or base64 (dry run only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// `kind: delivery`: the final word on one (event, trigger, action[, mention]).
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryResult {
    /// Always `delivery`.
    pub kind: &'static str,
    /// The event's id.
    pub event_id: String,
    /// `class::key`.
    pub object: String,
    /// Trigger name.
    pub trigger: String,
    /// Action name.
    pub action: String,
    /// `delivered`, `failed`, `skipped` or `dry_run`.
    pub status: &'static str,
    /// Requests sent for this action of this event, in all.
    pub attempts: u32,
    /// Status of the last HTTP answer.
    pub http_status: Option<u16>,
    /// From the first attempt to the outcome.
    pub duration_ms: u64,
    /// What was (or would have been) sent.
    pub request: Option<RequestSummary>,
    /// The beginning of the last answer.
    pub response_excerpt: Option<String>,
    /// Why it is not `delivered`.
    pub error: Option<ErrorBody>,
    /// The `webhook-id` receivers deduplicate on.
    pub webhook_id: Option<String>,
    /// For mention triggers: which mentioned contact.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mention: Option<usize>,
    /// Placeholders that resolved to nothing.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing_placeholders: Vec<String>,
    /// When the outcome was reached.
    pub time: String,
}

/// `kind: object_update`: attribute values from a remote answer, for the triggering object.
#[derive(Debug, Clone, Serialize)]
pub struct ObjectUpdate {
    /// Always `object_update`.
    pub kind: &'static str,
    /// The event's id.
    pub event_id: String,
    /// Trigger name.
    pub trigger: String,
    /// Action name.
    pub action: String,
    /// The object's class.
    pub class: String,
    /// The object's key.
    pub key: String,
    /// Attribute code -> value.
    pub fields: Map<String, Value>,
    /// When it was computed.
    pub time: String,
}

/// `kind: dead_letter`: a message that could not be an event, or a delivery that failed for
/// good, with the original bytes (capped) and where they came from.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterMessage {
    /// Always `dead_letter`.
    pub kind: &'static str,
    /// Short stable label.
    pub reason: String,
    /// What happened, for people.
    pub detail: String,
    /// Source coordinates of the original message.
    pub source: Coords,
    /// The original bytes: text, or base64 when not UTF-8; cut to the configured limit.
    pub raw: String,
    /// `utf8` or `base64`.
    pub raw_encoding: &'static str,
    /// Whether `raw` holds only the beginning of the message.
    pub raw_truncated: bool,
    /// Size of the whole original message, in bytes.
    pub raw_size: usize,
    /// SHA-256 of the whole original message, hex.
    pub raw_sha256: String,
    /// The event's id, when the message parsed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// Trigger, for a delivery that failed for good.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// Action, for a delivery that failed for good.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// When it was written.
    pub time: String,
}

/// What a dead letter is about, before the raw bytes are encoded.
#[derive(Debug, Clone)]
pub struct DeadLetter<'a> {
    /// Short stable label.
    pub reason: &'a str,
    /// What happened, for people.
    pub detail: &'a str,
    /// Source coordinates.
    pub source: &'a Coords,
    /// The original message bytes.
    pub raw: &'a [u8],
    /// Event id, when the message parsed.
    pub event_id: Option<&'a str>,
    /// Trigger, for a delivery that failed for good.
    pub trigger: Option<&'a str>,
    /// Action, for a delivery that failed for good.
    pub action: Option<&'a str>,
}

impl DeadLetter<'_> {
    /// The message, with `raw` cut so that its encoded form takes at most `max_raw` bytes:
    /// JSON escaping (`\u0001` is six bytes) and base64 make the encoded raw larger than the
    /// message, and the dead letter must still fit the broker's limit.
    pub fn message(&self, max_raw: usize) -> DeadLetterMessage {
        let (raw, raw_encoding, raw_truncated) = encode_raw(self.raw, max_raw);
        DeadLetterMessage {
            kind: "dead_letter",
            reason: self.reason.to_string(),
            detail: self.detail.to_string(),
            source: self.source.clone(),
            raw,
            raw_encoding,
            raw_truncated,
            raw_size: self.raw.len(),
            raw_sha256: hex(&Sha256::digest(self.raw)),
            event_id: self.event_id.map(str::to_string),
            trigger: self.trigger.map(str::to_string),
            action: self.action.map(str::to_string),
            time: now_rfc3339(),
        }
    }
}

/// The raw bytes as text (valid UTF-8) or base64, cut so that the JSON string holding them
/// takes at most `max` bytes; `true` when cut.
pub fn encode_raw(raw: &[u8], max: usize) -> (String, &'static str, bool) {
    match std::str::from_utf8(raw) {
        Ok(text) => {
            let mut used = 0;
            let mut end = 0;
            for (i, c) in text.char_indices() {
                let cost = json_escaped_len(c);
                if used + cost > max {
                    return (text[..i].to_string(), "utf8", true);
                }
                used += cost;
                end = i + c.len_utf8();
            }
            (text[..end].to_string(), "utf8", false)
        }
        Err(_) => {
            // Four characters per three bytes.
            let fits = (max / 4) * 3;
            let cut = raw.len() > fits;
            let kept = &raw[..raw.len().min(fits)];
            (base64::engine::general_purpose::STANDARD.encode(kept), "base64", cut)
        }
    }
}

/// Bytes `c` takes inside a JSON string as serde_json writes it.
fn json_escaped_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The first characters of an answer, for results and logs.
pub fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text.chars().take(EXCERPT_CHARS).collect();
    if text.chars().nth(EXCERPT_CHARS).is_some() {
        out.push('…');
    }
    out
}

/// Now, as RFC 3339 with milliseconds.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_is_cut_by_its_encoded_size() {
        let hostile = vec![1u8; 40_000];
        let (raw, enc, cut) = encode_raw(&hostile, 1000);
        assert_eq!((enc, cut), ("utf8", true));
        assert_eq!(raw.len(), 1000 / 6);
        let escaped = serde_json::to_string(&raw).unwrap();
        assert!(escaped.len() <= 1000 + 2, "{}", escaped.len());

        let (raw, _, cut) = encode_raw(b"short", 1000);
        assert_eq!((raw.as_str(), cut), ("short", false));

        let binary = vec![0xffu8; 3000];
        let (raw, enc, cut) = encode_raw(&binary, 400);
        assert_eq!((enc, cut), ("base64", true));
        assert!(raw.len() <= 400);
        // Never split a character.
        let (raw, _, cut) = encode_raw("ééé".as_bytes(), 3);
        assert_eq!((raw.as_str(), cut), ("é", true));
    }

    #[test]
    fn dead_letter_keeps_size_and_digest_of_the_whole_message() {
        let raw = vec![1u8; 5000];
        let source = Coords::File { path: "-".into(), line: 3, truncated_at: None, line_bytes: None };
        let letter = DeadLetter {
            reason: "invalid_json",
            detail: "x",
            source: &source,
            raw: &raw,
            event_id: None,
            trigger: None,
            action: None,
        };
        let m = letter.message(600);
        assert!(m.raw_truncated);
        assert_eq!(m.raw_size, 5000);
        assert_eq!(m.raw_sha256, hex(&Sha256::digest(&raw)));
        let json = serde_json::to_vec(&m).unwrap();
        assert!(json.len() < 600 + 400, "{}", json.len());
    }
}
