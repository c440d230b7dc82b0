//! The generic webhook action: any method, path, headers and payload.

use crate::config::raw::{ActionConfig, HttpMethod};
use crate::config::Problems;
use crate::template::{Escape, JsonTemplate, RenderContext, Template};

use super::{headers_field, json_field, template_field};

/// A compiled webhook action.
#[derive(Debug)]
pub struct WebhookSpec {
    /// HTTP method.
    pub method: HttpMethod,
    /// Appended to the connection URL.
    pub path: Option<Template>,
    /// Extra headers.
    pub headers: Vec<(String, Template)>,
    /// The payload, if any.
    pub payload: Option<Payload>,
    /// Content type of the payload.
    pub content_type: String,
}

/// A payload: JSON (placeholders substituted into the parsed tree) or any other text.
#[derive(Debug)]
pub enum Payload {
    /// `application/json` or `*+json`.
    Json(JsonTemplate),
    /// Any other content type, rendered as text.
    Text(Template),
}

/// Whether a content type is JSON.
pub fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || essence.ends_with("+json")
}

/// Checks and compiles a webhook action's fields.
pub fn compile(place: &str, raw: &ActionConfig, problems: &mut Problems) -> Option<WebhookSpec> {
    let content_type = raw.content_type.clone().unwrap_or_else(|| "application/json".into());
    if reqwest::header::HeaderValue::from_str(&content_type).is_err() || !content_type.contains('/') {
        problems.add(format!("{place}.content_type"), format!("{content_type:?} is not a media type"));
    }
    let method = raw.method.unwrap_or_default();
    let payload = match &raw.payload {
        None | Some(serde_json::Value::Null) => None,
        Some(v) if is_json(&content_type) => Some(Payload::Json(json_field(place, "payload", v, problems)?)),
        Some(serde_json::Value::String(text)) => {
            Some(Payload::Text(template_field(place, "payload", Some(text), problems)?))
        }
        Some(_) => {
            problems.add(format!("{place}.payload"), format!("a {content_type} payload must be written as text"));
            return None;
        }
    };
    if payload.is_some() && matches!(method, HttpMethod::Get | HttpMethod::Head) {
        problems.add(format!("{place}.payload"), format!("a {} request carries no payload", method.as_str()));
    }
    let path = match &raw.path {
        Some(p) => Some(template_field(place, "path", Some(p), problems)?),
        None => None,
    };
    Some(WebhookSpec {
        method,
        path,
        headers: headers_field(place, raw.headers.as_ref(), problems),
        payload,
        content_type,
    })
}

impl WebhookSpec {
    /// The content type and rendered body.
    pub fn body(&self, ctx: &RenderContext<'_>) -> (Option<String>, Vec<u8>) {
        match &self.payload {
            None => (None, Vec::new()),
            Some(Payload::Json(t)) => {
                (Some(self.content_type.clone()), serde_json::to_vec(&t.render(ctx)).unwrap_or_default())
            }
            Some(Payload::Text(t)) => (Some(self.content_type.clone()), t.render(ctx, Escape::None).into_bytes()),
        }
    }
}

/// Appends a rendered path to a URL: exactly one `/` between them, and a path starting
/// with `?` or `&` extends the query.
pub fn join_path(url: &str, path: &str) -> String {
    if path.is_empty() {
        return url.to_string();
    }
    if path.starts_with('?') || path.starts_with('&') {
        let sep = if url.contains('?') { '&' } else { '?' };
        return format!("{url}{sep}{}", &path[1..]);
    }
    format!("{}/{}", url.trim_end_matches('/'), path.trim_start_matches('/'))
}
