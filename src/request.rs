//! A rendered HTTP request: what is sent, how it is signed (Standard Webhooks), how big it
//! is, and how it is shown with secrets masked.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::connection::SigningKey;
use crate::mask;

/// A request ready to send.
#[derive(Debug, Clone)]
pub struct Request {
    /// HTTP method.
    pub method: String,
    /// Full URL.
    pub url: String,
    /// Lower-case names, in sending order.
    pub headers: Vec<(String, String)>,
    /// Body bytes; shared, so that an attempt sends them without copying.
    pub body: bytes::Bytes,
    /// Names of headers whose value is a secret.
    pub secret_headers: Vec<String>,
    /// The URL is a chat webhook's: shown as its host only (see [`mask::host_only`]).
    pub host_only: bool,
}

/// The stable id of everything sent for one event and action: receivers deduplicate on it,
/// and it is the same across retries, restarts and replicas.
pub fn webhook_id(event_id: &str, action: &str, mention: Option<usize>) -> String {
    let mut h = Sha256::new();
    h.update(event_id.as_bytes());
    h.update([0]);
    h.update(action.as_bytes());
    if let Some(m) = mention {
        h.update([0]);
        h.update(m.to_string().as_bytes());
    }
    let digest = h.finalize();
    format!("msg_{}", hex(&digest[..16]))
}

/// Lower-case hex of `bytes`, in one allocation (ids are made per delivery).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0xf) as usize] as char);
    }
    out
}

/// Standard Webhooks signature: `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, one per
/// key, space separated, so receivers can rotate secrets.
pub fn signature(keys: &[SigningKey], id: &str, timestamp: i64, body: &[u8]) -> String {
    keys.iter()
        .map(|k| {
            let mut mac = Hmac::<Sha256>::new_from_slice(&k.0).expect("HMAC takes any key length");
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(timestamp.to_string().as_bytes());
            mac.update(b".");
            mac.update(body);
            format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl Request {
    /// Adds `webhook-timestamp` (seconds) and, with keys, `webhook-signature`; done per
    /// attempt so a late retry is not refused as stale.
    pub fn stamp(&mut self, keys: &[SigningKey], now_unix: i64) {
        for (name, value) in self.stamp_headers(keys, now_unix) {
            set_header(&mut self.headers, name, value);
        }
    }

    /// The headers [`Request::stamp`] sets, without changing the request.
    pub fn stamp_headers(&self, keys: &[SigningKey], now_unix: i64) -> Vec<(&'static str, String)> {
        let mut out = vec![("webhook-timestamp", now_unix.to_string())];
        if !keys.is_empty() {
            let id = self.header("webhook-id").unwrap_or_default();
            out.push(("webhook-signature", signature(keys, id, now_unix, &self.body)));
        }
        out
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// URL + headers + body, the size `delivery.max_request_bytes` limits.
    pub fn size(&self) -> usize {
        self.url.len() + self.headers.iter().map(|(k, v)| k.len() + v.len() + 4).sum::<usize>() + self.body.len()
    }

    /// The URL with its secret parts masked.
    pub fn masked_url(&self) -> String {
        if self.host_only {
            mask::host_only(&self.url)
        } else {
            mask::url(&self.url)
        }
    }

    /// The request as shown to people: secrets masked, body as text (or base64).
    pub fn shown(&self) -> ShownRequest {
        let headers = self
            .headers
            .iter()
            .map(|(k, v)| {
                let secret = self.secret_headers.contains(k) || mask::is_secret_header(k);
                (k.clone(), serde_json::Value::String(if secret { "***".to_string() } else { v.clone() }))
            })
            .collect();
        let body = match std::str::from_utf8(&self.body) {
            Ok(text) => text.to_string(),
            Err(_) => base64::engine::general_purpose::STANDARD.encode(&self.body),
        };
        ShownRequest { method: self.method.clone(), url: self.masked_url(), headers, body }
    }
}

/// A request as `render` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct ShownRequest {
    /// HTTP method.
    pub method: String,
    /// URL, secrets masked.
    pub url: String,
    /// Headers, secret values masked.
    pub headers: serde_json::Map<String, serde_json::Value>,
    /// Body as sent (base64 when not UTF-8).
    pub body: String,
}

/// Sets a header, replacing one of the same (lower-case) name.
pub fn set_header(headers: &mut Vec<(String, String)>, name: &str, value: String) {
    match headers.iter_mut().find(|(k, _)| k == name) {
        Some(slot) => slot.1 = value,
        None => headers.push((name.to_string(), value)),
    }
}
