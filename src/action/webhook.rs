//! The generic webhook action: any method, path, headers and payload.

use crate::config_file::raw::{HttpMethod, WebhookFields};
use crate::config_file::Problems;
use crate::template::{RenderContext, Template};

use super::{headers_field, template_field};

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

pub use super::payload::Payload;

/// Checks and compiles a webhook action's fields.
pub fn compile(place: &str, raw: &WebhookFields, problems: &mut Problems) -> Option<WebhookSpec> {
    // A Content-Type among the headers is the payload's type: honoured, or refused when
    // `content_type` says otherwise, never silently replaced.
    let header_type = raw
        .headers
        .iter()
        .flatten()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .map(|(k, v)| (k.clone(), v.clone()));
    let content_type = match (&raw.content_type, &header_type) {
        (Some(ct), Some((k, v))) if !ct.eq_ignore_ascii_case(v) => {
            problems.add(
                format!("{place}.headers.{k}"),
                format!("{v:?} contradicts content_type {ct:?}: give the type once, in content_type"),
            );
            ct.clone()
        }
        (Some(ct), _) => ct.clone(),
        (None, Some((_, v))) => v.clone(),
        (None, None) => "application/json".into(),
    };
    if reqwest::header::HeaderValue::from_str(&content_type).is_err() || !content_type.contains('/') {
        problems.add(format!("{place}.content_type"), format!("{content_type:?} is not a media type"));
    }
    let method = raw.method.unwrap_or_default();
    let payload = match &raw.payload {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => Some(super::payload::compile(place, &content_type, v, problems)?),
    };
    if payload.is_some() && matches!(method, HttpMethod::Get | HttpMethod::Head) {
        problems.add(format!("{place}.payload"), format!("a {} request carries no payload", method.as_str()));
    }
    let path = match &raw.path {
        Some(p) => Some(template_field(place, "path", Some(p), problems)?),
        None => None,
    };
    let mut headers = headers_field(place, raw.headers.as_ref(), problems);
    headers.retain(|(k, _)| k != "content-type");
    Some(WebhookSpec { method, path, headers, payload, content_type })
}

impl WebhookSpec {
    /// The content type and rendered body.
    pub fn body(&self, ctx: &RenderContext<'_>) -> (Option<String>, Vec<u8>) {
        match &self.payload {
            None => (None, Vec::new()),
            Some(p) => (Some(self.content_type.clone()), p.render(ctx)),
        }
    }
}

/// Appends a rendered path to a URL: exactly one `/` between them, the path before the
/// URL's query (`https://h/hooks?token=x` + `a/b` = `https://h/hooks/a/b?token=x`), and a
/// path starting with `?` or `&` (or holding a query) extends the query.
pub fn join_path(url: &str, path: &str) -> String {
    if path.is_empty() {
        return url.to_string();
    }
    let (base, base_query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let (path, path_query) = match path.strip_prefix(['?', '&']) {
        Some(q) => ("", Some(q)),
        None => path.split_once('?').map_or((path, None), |(p, q)| (p, Some(q))),
    };
    let mut out = if path.is_empty() {
        base.to_string()
    } else {
        format!("{}/{}", base.trim_end_matches('/'), path.trim_start_matches('/'))
    };
    let query: Vec<&str> = [base_query, path_query].into_iter().flatten().filter(|q| !q.is_empty()).collect();
    if !query.is_empty() {
        out.push('?');
        out.push_str(&query.join("&"));
    }
    out
}

/// A path that is one placeholder: the value's `/` separate segments, each segment is
/// percent-encoded, and a value that would leave the connection's URL (a scheme, `.` or
/// `..` segments, an empty segment) makes the request invalid.
pub fn path_value(value: &str, source: &str, ctx: &RenderContext<'_>) -> String {
    if value.contains("://") || value.starts_with("//") {
        ctx.refuse(format!("{source} renders {value:?}: a path cannot name another site"));
        return String::new();
    }
    let trimmed = value.strip_prefix('/').unwrap_or(value);
    let last = trimmed.split('/').count() - 1;
    let mut out = String::with_capacity(value.len());
    for (i, segment) in trimmed.split('/').enumerate() {
        // An empty segment drops a level of the path, a dot segment climbs one; only a
        // trailing `/` is harmless.
        if matches!(segment, "." | "..") || (segment.is_empty() && i < last) {
            ctx.refuse(format!("{source} renders {value:?}, whose segment {segment:?} cannot be a path segment"));
        }
        if i > 0 {
            out.push('/');
        }
        out.push_str(&crate::template::url_encode(segment));
    }
    out
}
