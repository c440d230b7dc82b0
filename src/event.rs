//! The object-change event (schema `object-change.v1.json`), parsed from a message's bytes,
//! plain or wrapped in a CloudEvents 1.0 envelope.
//!
//! Parsing never panics: every way a message can be wrong is an [`EventError`] that the
//! pipeline turns into a dead letter.

use std::sync::{Arc, OnceLock};

use serde::Deserialize;
use serde_json::{Map, Value};
use thiserror::Error;

use crate::schema;

/// `create`, `update` or `delete`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    Create,
    Update,
    Delete,
}

/// A lifecycle change.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StateChange {
    /// The state attribute's code.
    #[serde(default)]
    pub attribute: Option<String>,
    /// State before; absent on create.
    #[serde(default)]
    pub from: Option<String>,
    /// State after.
    #[serde(default)]
    pub to: Option<String>,
    /// The stimulus applied.
    #[serde(default)]
    pub stimulus: Option<String>,
}

/// A stimulus available in the current state.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct Transition {
    /// Stimulus code, e.g. `ev_resolve`.
    pub code: String,
    /// Human label.
    #[serde(default)]
    pub label: Option<String>,
}

/// A case-log entry added by the change.
#[derive(Debug, Clone, Deserialize)]
pub struct LogUpdate {
    /// The case-log attribute's code.
    pub attribute: String,
    /// The entry itself.
    #[serde(default)]
    pub entry: Value,
}

/// The application that emitted the event.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SourceApp {
    /// Name of the application.
    #[serde(default)]
    pub name: Option<String>,
    /// Base URL for hyperlinks and buttons, e.g. `https://itop.example.com/`.
    #[serde(default)]
    pub url: Option<String>,
    /// The user portal's address, for `$this->hyperlink(portal)$`, e.g.
    /// `https://itop.example.com/pages/exec.php?exec_module=itop-portal-base&exec_page=index.php&portal_id=itop-portal`.
    #[serde(default)]
    pub portal_url: Option<String>,
    /// The modules' root, for `$MODULES_URL$` (default: `url` + `env-production/`).
    #[serde(default)]
    pub modules_url: Option<String>,
}

/// How an attribute's text is to be read (`formats` in the event).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttributeFormat {
    /// Plain text (the default): shown as written, never read as markup.
    Text,
    /// HTML (iTop's HTML attributes: CKEditor output).
    Html,
}

/// Display labels.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Labels {
    /// Attribute code -> attribute label.
    #[serde(default)]
    pub attributes: Map<String, Value>,
    /// Attribute code -> label of its current value.
    #[serde(default)]
    pub values: Map<String, Value>,
}

/// Who made the change.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Actor {
    /// The user account.
    #[serde(default)]
    pub user: Map<String, Value>,
    /// The person behind it.
    #[serde(default)]
    pub contact: Map<String, Value>,
}

#[derive(Deserialize)]
struct Wire {
    id: String,
    time: String,
    operation: Operation,
    class: String,
    #[serde(default)]
    ancestors: Vec<String>,
    key: Value,
    object: Map<String, Value>,
    #[serde(default)]
    previous: Map<String, Value>,
    #[serde(default)]
    changed: Option<Vec<String>>,
    #[serde(default)]
    state: Option<StateChange>,
    #[serde(default)]
    transitions: Vec<Transition>,
    #[serde(default)]
    log: Option<LogUpdate>,
    #[serde(default)]
    mentions: Vec<Map<String, Value>>,
    #[serde(default)]
    actor: Option<Actor>,
    #[serde(default)]
    context: Vec<String>,
    #[serde(default)]
    source: Option<SourceApp>,
    #[serde(default)]
    labels: Labels,
    #[serde(default)]
    formats: std::collections::HashMap<String, AttributeFormat>,
}

/// A parsed, schema-valid object-change event.
#[derive(Debug, Clone)]
pub struct Event {
    /// Unique id of the change: the idempotency key of everything sent for it.
    pub id: String,
    /// RFC 3339 time of the change.
    pub time: String,
    /// What happened to the object.
    pub operation: Operation,
    /// Final class.
    pub class: String,
    /// Parent classes, nearest first.
    pub ancestors: Vec<String>,
    /// The object's id, as text.
    pub key: String,
    /// Attributes after the change (before it, for delete).
    pub object: Map<String, Value>,
    /// Previous values of changed attributes.
    pub previous: Map<String, Value>,
    /// Codes of changed attributes (the keys of `previous` when not given).
    pub changed: Vec<String>,
    /// Lifecycle change.
    pub state: Option<StateChange>,
    /// Stimuli available now.
    pub transitions: Vec<Transition>,
    /// Case-log entry added.
    pub log: Option<LogUpdate>,
    /// Contacts mentioned.
    pub mentions: Vec<Map<String, Value>>,
    /// Who made the change.
    pub actor: Actor,
    /// Origin tags.
    pub context: Vec<String>,
    /// Emitting application.
    pub source: SourceApp,
    /// Display labels.
    pub labels: Labels,
    /// Attributes whose text is HTML, by attribute path (`description`, `team_id->notes`);
    /// every other value is plain text.
    pub formats: std::collections::HashMap<String, AttributeFormat>,
    /// The event as JSON, for expressions (`event` in CEL).
    pub document: Arc<Value>,
    /// The W3C trace the event belongs to, when it came with one.
    pub trace: Option<crate::trace::TraceParent>,
}

impl Event {
    /// `class::key`: the message key of everything published about this object.
    pub fn object_key(&self) -> String {
        format!("{}::{}", self.class, self.key)
    }

    /// Whether the final class or an ancestor is `class`.
    pub fn is_a(&self, class: &str) -> bool {
        self.class == class || self.ancestors.iter().any(|a| a == class)
    }

    /// Whether the event declares the attribute at `path` (`team_id->notes`) as HTML.
    pub fn is_html(&self, path: &[String]) -> bool {
        if self.formats.is_empty() {
            return false;
        }
        let key = path.join("->");
        self.formats.get(&key) == Some(&AttributeFormat::Html)
    }

    /// `$MODULES_URL$`: `source.modules_url`, else the application's `env-production/`.
    pub fn modules_url(&self) -> Option<String> {
        match self.source.modules_url.as_deref().filter(|u| !u.is_empty()) {
            Some(u) if u.ends_with('/') => Some(u.to_string()),
            Some(u) => Some(format!("{u}/")),
            None => self.app_url().map(|base| format!("{base}env-production/")),
        }
    }

    /// The application's base URL with exactly one trailing slash, if known.
    pub fn app_url(&self) -> Option<String> {
        self.source.url.as_deref().filter(|u| !u.is_empty()).map(|u| {
            if u.ends_with('/') {
                u.to_string()
            } else {
                format!("{u}/")
            }
        })
    }
}

/// CloudEvents binary-mode attributes taken from transport headers (`ce_*` / `ce-*`).
#[derive(Debug, Clone, Default)]
pub struct CloudEventHeaders {
    /// `ce_specversion`.
    pub specversion: Option<String>,
    /// `ce_id`.
    pub id: Option<String>,
    /// `ce_time`.
    pub time: Option<String>,
    /// `ce_source`.
    pub source: Option<String>,
    /// `ce_traceparent` (the CloudEvents distributed-tracing extension).
    pub traceparent: Option<String>,
}

impl CloudEventHeaders {
    /// Collects `ce_`/`ce-` prefixed headers; `None` when the message is not binary mode.
    pub fn from_headers<'a>(headers: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Option<Self> {
        let mut ce = CloudEventHeaders::default();
        for (name, value) in headers {
            let lower = name.to_ascii_lowercase();
            let Some(attr) = lower.strip_prefix("ce_").or_else(|| lower.strip_prefix("ce-")) else {
                continue;
            };
            let value = String::from_utf8_lossy(value).into_owned();
            match attr {
                "specversion" => ce.specversion = Some(value),
                "id" => ce.id = Some(value),
                "time" => ce.time = Some(value),
                "source" => ce.source = Some(value),
                "traceparent" => ce.traceparent = Some(value),
                _ => {}
            }
        }
        ce.specversion.is_some().then_some(ce)
    }
}

/// Why a message is not an event; the label is the dead letter's `reason`.
#[derive(Debug, Error)]
pub enum EventError {
    /// Bytes that are not UTF-8.
    #[error("not UTF-8: invalid byte at offset {offset}")]
    NotUtf8 {
        /// Offset of the first invalid byte.
        offset: usize,
    },
    /// Not JSON at all.
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// JSON that breaks the event schema.
    #[error("schema violation: {0}")]
    Schema(String),
    /// A CloudEvents envelope without a usable `data`.
    #[error("invalid CloudEvents envelope: {0}")]
    CloudEvents(String),
}

impl EventError {
    /// Short stable label for metrics and dead letters.
    pub fn reason(&self) -> &'static str {
        match self {
            EventError::NotUtf8 { .. } => "not_utf8",
            EventError::InvalidJson(_) => "invalid_json",
            EventError::Schema(_) => "schema_violation",
            EventError::CloudEvents(_) => "invalid_cloudevent",
        }
    }
}

/// Parses one message: plain event, structured CloudEvent, or binary CloudEvent when
/// `ce` carries its header attributes.
pub fn parse_event(bytes: &[u8], ce: Option<&CloudEventHeaders>) -> Result<Event, EventError> {
    let text = std::str::from_utf8(bytes).map_err(|e| EventError::NotUtf8 { offset: e.valid_up_to() })?;
    let mut value: Value = serde_json::from_str(text).map_err(|e| {
        let hint = json_hint(text, &e);
        EventError::InvalidJson(format!("{e}{hint}"))
    })?;
    let mut envelope = CloudEventHeaders::default();
    if let Some(ce) = ce {
        envelope = ce.clone();
    } else if let Some(obj) = value.as_object_mut() {
        if obj.contains_key("specversion") {
            envelope = structured_envelope(obj)?;
            value = match obj.remove("data") {
                Some(Value::String(s)) => serde_json::from_str(&s)
                    .map_err(|e| EventError::CloudEvents(format!("data is a string that is not JSON: {e}")))?,
                Some(data) => data,
                None => return Err(EventError::CloudEvents("no data".into())),
            };
        }
    }
    let trace = envelope.traceparent.as_deref().and_then(crate::trace::TraceParent::parse);
    if let Some(obj) = value.as_object_mut() {
        fill_from_envelope(obj, envelope);
    }
    validate(&value)?;
    let wire = Wire::deserialize(&value).map_err(|e| EventError::Schema(e.to_string()))?;
    let mut event = from_wire(wire, value);
    event.trace = trace;
    Ok(event)
}

fn structured_envelope(obj: &Map<String, Value>) -> Result<CloudEventHeaders, EventError> {
    let text = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_string);
    let specversion = text("specversion");
    if specversion.as_deref() != Some("1.0") {
        return Err(EventError::CloudEvents(format!(
            "specversion must be \"1.0\", got {}",
            obj.get("specversion").map(Value::to_string).unwrap_or_default()
        )));
    }
    if let Some(ct) = text("datacontenttype") {
        if !(ct.starts_with("application/json") || ct.ends_with("+json")) {
            return Err(EventError::CloudEvents(format!("datacontenttype {ct:?} is not JSON")));
        }
    }
    Ok(CloudEventHeaders {
        specversion,
        id: text("id"),
        time: text("time"),
        source: text("source"),
        traceparent: text("traceparent"),
    })
}

/// Envelope `id`, `time` and `source` fill the event's own when absent.
fn fill_from_envelope(obj: &mut Map<String, Value>, ce: CloudEventHeaders) {
    if let Some(id) = ce.id {
        obj.entry("id").or_insert(Value::String(id));
    }
    if let Some(time) = ce.time {
        obj.entry("time").or_insert(Value::String(time));
    }
    if let Some(source) = ce.source {
        obj.entry("source").or_insert_with(|| {
            let mut s = Map::new();
            if source.starts_with("http://") || source.starts_with("https://") {
                s.insert("url".into(), Value::String(source.clone()));
            }
            s.insert("name".into(), Value::String(source));
            Value::Object(s)
        });
    }
}

fn validate(value: &Value) -> Result<(), EventError> {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    let validator = VALIDATOR.get_or_init(|| schema::validator(schema::EVENT));
    // Nearly every event is valid: the yes/no check stops at nothing and builds no error
    // values, so the errors are collected only for the rare event that fails it.
    if validator.is_valid(value) {
        return Ok(());
    }
    let errors: Vec<String> = validator
        .iter_errors(value)
        .take(5)
        .map(|e| format!("{}: {}", schema::place(e.instance_path().as_str()), e))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(EventError::Schema(errors.join("; ")))
    }
}

fn from_wire(w: Wire, document: Value) -> Event {
    let key = match &w.key {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let changed = w.changed.unwrap_or_else(|| w.previous.keys().cloned().collect());
    Event {
        id: w.id,
        time: w.time,
        operation: w.operation,
        class: w.class,
        ancestors: w.ancestors,
        key,
        object: w.object,
        previous: w.previous,
        changed,
        state: w.state,
        transitions: w.transitions,
        log: w.log,
        mentions: w.mentions,
        actor: w.actor.unwrap_or_default(),
        context: w.context,
        source: w.source.unwrap_or_default(),
        labels: w.labels,
        formats: w.formats,
        document: Arc::new(document),
        trace: None,
    }
}

/// A hint for the JSON mistakes people make most: single quotes and trailing commas.
pub fn json_hint(text: &str, e: &serde_json::Error) -> &'static str {
    let line = text.lines().nth(e.line().saturating_sub(1)).unwrap_or("");
    let at = line.chars().nth(e.column().saturating_sub(1));
    if at == Some('\'') {
        " (single quotes are not JSON)"
    } else if at == Some('/') || at == Some('#') {
        " (comments are not JSON)"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests;
