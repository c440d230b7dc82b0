//! The iTop action: a call to another iTop's REST/JSON API (`rest.php`), sent as
//! `application/x-www-form-urlencoded` `version=…&json_data=…`; iTop answers HTTP 200 with
//! `{"code": N, "message": …}` and `code != 0` is a failure.

use serde_json::Value;

use crate::config_file::raw::ItopFields;
use crate::config_file::Problems;
use crate::template::{JsonTemplate, RenderContext, Template};

use super::{headers_field, json_field, AnswerError};

/// The only content type iTop's REST API reads.
const FORM_TYPE: &str = "application/x-www-form-urlencoded";

/// A compiled iTop action.
#[derive(Debug)]
pub struct ItopSpec {
    /// Extra headers.
    pub headers: Vec<(String, Template)>,
    /// The `json_data` operation.
    pub json_data: JsonTemplate,
}

/// Checks and compiles an iTop action's fields.
pub fn compile(place: &str, raw: &ItopFields, problems: &mut Problems) -> Option<ItopSpec> {
    let Some(json) = &raw.json_data else {
        problems.add(format!("{place}.json_data"), "an itop action needs json_data (the REST operation to run)");
        return None;
    };
    let json_data = json_field(place, "json_data", json, problems)?;
    if !matches!(json_data, JsonTemplate::Object(_) | JsonTemplate::Literal(Value::Object(_))) {
        problems.add(format!("{place}.json_data"), "must be a JSON object with an \"operation\"");
    }
    // iTop's REST API reads a form: any other Content-Type is refused rather than replaced.
    for (k, v) in raw.headers.iter().flatten() {
        let essence = v.split(';').next().unwrap_or("").trim();
        if k.eq_ignore_ascii_case("content-type") && !essence.eq_ignore_ascii_case(FORM_TYPE) {
            problems.add(
                format!("{place}.headers.{k}"),
                format!("an itop action is sent as {FORM_TYPE} (version=…&json_data=…), as iTop's REST API reads it; remove this header"),
            );
        }
    }
    let mut headers = headers_field(place, raw.headers.as_ref(), problems);
    headers.retain(|(k, _)| k != "content-type");
    Some(ItopSpec { headers, json_data })
}

impl ItopSpec {
    /// The form-encoded body.
    pub fn body(&self, ctx: &RenderContext<'_>, version: &str) -> (Option<String>, Vec<u8>) {
        let json = serde_json::to_string(&self.json_data.render(ctx)).unwrap_or_default();
        let body = url_encode_form(&[("version", version), ("json_data", &json)]);
        (Some(FORM_TYPE.into()), body.into_bytes())
    }
}

fn url_encode_form(pairs: &[(&str, &str)]) -> String {
    use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
    const FORM: &percent_encoding::AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'*');
    pairs
        .iter()
        .map(|(k, v)| {
            format!("{}={}", utf8_percent_encode(k, FORM), utf8_percent_encode(v, FORM).to_string().replace("%20", "+"))
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// `code != 0` in a 2xx answer is iTop's way of failing.
pub fn answer_error(status: u16, body: &[u8]) -> Option<AnswerError> {
    if !(200..300).contains(&status) {
        return None;
    }
    let parsed: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => {
            return Some(AnswerError {
                reason: "itop_invalid_answer".into(),
                detail: "the answer is not iTop REST JSON".into(),
            })
        }
    };
    match parsed.get("code").and_then(Value::as_i64) {
        Some(0) => None,
        Some(code) => Some(AnswerError {
            reason: "itop_error".into(),
            detail: format!("code {code}: {}", parsed.get("message").and_then(Value::as_str).unwrap_or("(no message)")),
        }),
        None => Some(AnswerError { reason: "itop_invalid_answer".into(), detail: "the answer has no \"code\"".into() }),
    }
}
