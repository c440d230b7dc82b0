//! Configuration: read the YAML file, expand `${ENV}`, validate it against the shipped
//! schema, then check references, templates and expressions and compile everything into
//! the typed [`Config`] the pipeline runs on. Every problem is reported at once, each
//! with its place (`actions[2].payload`) and cause.

mod checks;
mod delivery;
mod document;
mod input;
pub(crate) mod kafka_properties;
pub(crate) mod kafka_topics;
mod metrics;
pub(crate) mod nats_subject;
mod output;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde_json::Value;
use thiserror::Error;

use crate::action::{self, Action};
use crate::connection::{self, Connection};
use crate::trigger::{self, Trigger};

use checks::check_delivery;
pub(crate) use document::normalise_yes_no;
use document::{expand_env, schema_problems, without_foreign_action_fields, Expanded};

pub use crate::config_file::{check_retry, raw, secret, Problem, Problems};
pub use delivery::Delivery;
pub use input::{Input, KafkaInput, NatsInput};
pub use output::{KafkaOutput, NatsOutput, Output};
use raw::SourceConfig;
use raw::{DestinationConfig, PresentationLists};

/// Why a config cannot be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path given.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not YAML.
    #[error("{path}: invalid YAML: {message}")]
    Yaml {
        /// The path given.
        path: String,
        /// Parser message with line and column.
        message: String,
    },
    /// YAML that breaks the rules.
    #[error("{}", .problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

/// A validated, compiled configuration.
#[derive(Debug)]
pub struct Config {
    /// Where events come from.
    pub source: Input,
    /// Where results and callback updates go.
    pub responses: Output,
    /// Where dead letters go.
    pub dead_letter: Output,
    /// Address of the operations endpoint (/metrics, /healthz, /readyz); `None`: no server.
    pub listen: Option<String>,
    /// Delivery settings.
    pub delivery: Delivery,
    /// Connections; actions refer to them by index.
    pub connections: Vec<Connection>,
    /// Actions; triggers refer to them by index.
    pub actions: Vec<Action>,
    /// Triggers in config order.
    pub triggers: Vec<Trigger>,
    /// Attribute lists per class.
    pub presentation: BTreeMap<String, PresentationLists>,
    /// Whether `run` may start with no triggers.
    pub allow_no_triggers: bool,
    /// How long `run` may stay not ready at start; `None`: no limit.
    pub startup_timeout: Option<std::time::Duration>,
}

impl Config {
    /// Reads, validates and compiles the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Config::from_yaml(&text).map_err(|e| match e {
            ConfigError::Yaml { message, .. } => ConfigError::Yaml { path: path.display().to_string(), message },
            other => other,
        })
    }

    /// Validates and compiles YAML text.
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        let mut value: Value = serde_norway::from_str(text)
            .map_err(|e| ConfigError::Yaml { path: "config".into(), message: e.to_string() })?;
        if value.is_null() {
            value = Value::Object(Default::default());
        }
        let mut problems = Problems::default();
        let mut expanded = Expanded::default();
        expand_env(&mut value, "", &mut problems, &mut expanded);
        normalise_yes_no(&mut value);
        schema_problems(&value, &mut problems, &expanded);
        if !problems.is_empty() {
            // The semantic problems too, when the document still reads: one pass shows them all.
            if let Ok(raw) = serde_json::from_value::<raw::RawConfig>(without_foreign_action_fields(value.clone())) {
                if let Err(ConfigError::Invalid { problems: more }) = compile(raw) {
                    for p in more {
                        if !problems.0.iter().any(|q| q.place == p.place) {
                            problems.0.push(p);
                        }
                    }
                }
            }
            return Err(expanded.redact(ConfigError::Invalid { problems: problems.0 }));
        }
        let raw: Result<raw::RawConfig, _> = serde_json::from_value(value).map_err(|e| ConfigError::Invalid {
            problems: vec![Problem { place: "(top level)".into(), message: e.to_string() }],
        });
        let raw = raw.map_err(|e| expanded.redact(e))?;
        compile(raw).map_err(|e| expanded.redact(e))
    }

    /// Why `run` refuses this config although it is valid: no triggers, unless
    /// `allow_no_triggers` says that is meant. `check` prints it as a warning.
    pub fn no_triggers_warning(&self) -> Option<&'static str> {
        self.triggers.is_empty().then_some(
            "no triggers: every event would be acknowledged and none delivered; `run` refuses this unless allow_no_triggers: true",
        )
    }

    /// What `check` tells about a valid config besides "ok": connections whose whole URL
    /// comes from the event, with how it is checked.
    pub fn notes(&self) -> Vec<String> {
        self.connections
            .iter()
            .filter(|c| c.url_form == connection::UrlForm::FromObject)
            .map(|c| {
                let source = c.url.single_placeholder().map(|p| p.source()).unwrap_or_default();
                format!(
                    "connections.{}.url: whole URL from the placeholder {source}, checked on every request \
                     (http or https, a host, no credentials, the destination policy)",
                    c.name
                )
            })
            .collect()
    }

    /// The action with this name.
    pub fn action_index(&self, name: &str) -> Option<usize> {
        self.actions.iter().position(|a| a.name == name)
    }
}

fn compile(mut raw: raw::RawConfig) -> Result<Config, ConfigError> {
    let mut problems = Problems::default();
    check_delivery(&raw.delivery, &mut problems);
    if let SourceConfig::Nats { credentials, .. } = &raw.source {
        check_nats_secrets("source.credentials", credentials, &mut problems);
    }
    for (place, message) in
        kafka_topics::check(&raw.source, &[("responses", &raw.responses), ("dead_letter", &raw.dead_letter)])
    {
        problems.add(place, message);
    }
    compile_nats_retry(&mut raw, &mut problems);
    for (place, dest) in [("responses", &raw.responses), ("dead_letter", &raw.dead_letter)] {
        if let DestinationConfig::Nats { credentials: Some(credentials), .. } = dest {
            check_nats_secrets(&format!("{place}.credentials"), credentials, &mut problems);
        }
    }
    let proxy = raw.delivery.proxy.as_ref().and_then(|p| match crate::net::ProxySettings::parse(p) {
        Ok(settings) => Some(settings),
        Err(errors) => {
            for e in errors {
                match e {
                    crate::net::ProxyError::Url(message) => problems.add("delivery.proxy.url", message),
                    crate::net::ProxyError::NoProxy { index, message } => {
                        problems.add(format!("delivery.proxy.no_proxy[{index}]"), message)
                    }
                }
            }
            None
        }
    });
    // Name -> index; `None` for one that failed to compile: still known, so that one bad
    // connection does not also fail every action on it (its problems are reported already).
    let mut connection_index: HashMap<String, Option<usize>> = HashMap::new();
    let mut connections = Vec::new();
    for (name, c) in &raw.connections {
        if let Some(mut conn) = connection::compile(name, c, &mut problems) {
            conn.proxy = proxy.clone();
            connection_index.insert(name.clone(), Some(connections.len()));
            connections.push(conn);
        } else {
            connection_index.insert(name.clone(), None);
        }
    }
    let mut actions = Vec::new();
    // Likewise for actions.
    let mut action_index: HashMap<String, Option<usize>> = HashMap::new();
    for (i, a) in raw.actions.iter().enumerate() {
        let place = format!("actions[{i}]");
        if action_index.insert(a.name.clone(), Some(actions.len())).is_some() {
            problems.add(format!("{place}.name"), format!("duplicate action name {:?}", a.name));
        }
        if let Some(action) = action::compile(&place, a, &connection_index, &raw.presentation, &mut problems) {
            actions.push(action);
        } else {
            action_index.insert(a.name.clone(), None);
        }
    }
    // A chat webhook's URL is its credential: every connection a chat action sends
    // through is shown as its host only.
    for a in &actions {
        if a.kind.is_chat() {
            for c in std::iter::once(a.connection).chain(a.test_connection) {
                if let Some(conn) = connections.get_mut(c) {
                    conn.chat = true;
                }
            }
        }
    }
    check_connection_content_types(&actions, &connections, &mut problems);
    let mut triggers = Vec::new();
    let mut trigger_names = HashMap::new();
    for (i, t) in raw.triggers.iter().enumerate() {
        let place = format!("triggers[{i}]");
        if trigger_names.insert(t.name.clone(), i).is_some() {
            problems.add(format!("{place}.name"), format!("duplicate trigger name {:?}", t.name));
        }
        if let Some(mut trigger) = trigger::compile(&place, t, &action_index, &raw.actions, &mut problems) {
            trigger.max_mentions = raw.delivery.max_mentions;
            triggers.push(trigger);
        }
    }
    for (class, lists) in &raw.presentation {
        for (list, codes) in [("list", &lists.list), ("slack", &lists.slack), ("msteams", &lists.msteams)] {
            for (j, code) in codes.iter().enumerate() {
                if code.is_empty() || !code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                    problems
                        .add(format!("presentation.{class}.{list}[{j}]"), format!("{code:?} is not an attribute code"));
                }
            }
        }
    }
    let source = match Input::compile(&raw.source) {
        Ok(source) => Some(source),
        Err((place, message)) => {
            if !problems.0.iter().any(|p| p.place == place) {
                problems.add(place, message);
            }
            None
        }
    };
    let mut output = |place: &str, dest: &DestinationConfig| match Output::compile(place, dest, &raw.source) {
        Ok(output) => Some(output),
        Err((place, message)) => {
            problems.add(place, message);
            None
        }
    };
    let (responses, dead_letter) = (output("responses", &raw.responses), output("dead_letter", &raw.dead_letter));
    let (Some(source), Some(responses), Some(dead_letter), true) =
        (source, responses, dead_letter, problems.is_empty())
    else {
        return Err(ConfigError::Invalid { problems: problems.0 });
    };
    Ok(Config {
        source,
        responses,
        dead_letter,
        listen: raw.server.listen,
        delivery: Delivery::from(&raw.delivery),
        connections,
        actions,
        triggers,
        presentation: raw.presentation,
        allow_no_triggers: raw.allow_no_triggers,
        startup_timeout: raw.startup_timeout.map(|d| d.0),
    })
}

/// A connection's Content-Type header is honoured only where it agrees with what the
/// action sends; anywhere else it would be replaced, so `check` refuses it.
fn check_connection_content_types(actions: &[Action], connections: &[Connection], problems: &mut Problems) {
    for a in actions {
        let sent = match &a.spec {
            action::Spec::Webhook(w) if w.payload.is_none() => continue,
            action::Spec::Webhook(w) => w.content_type.as_str(),
            action::Spec::Itop(_) => "application/x-www-form-urlencoded",
            _ => "application/json",
        };
        for c in std::iter::once(a.connection).chain(a.test_connection) {
            let Some(conn) = connections.get(c) else { continue };
            let Some((_, t)) = conn.headers.iter().find(|(k, _)| k == "content-type") else { continue };
            let written: String = t.literals().collect();
            if !written.trim().eq_ignore_ascii_case(sent) {
                problems.add(
                    format!("connections.{}.headers.content-type", conn.name),
                    format!(
                        "{written:?} differs from the {sent} that the {} action {:?} sends: set the type on the action (content_type), not on the connection",
                        a.kind.as_str(),
                        a.name
                    ),
                );
            }
        }
    }
}

/// Fills in the retry stream and subject of a NATS source and checks them, with the names
/// they derive from, against the NATS naming rules: after this, both are `Some`.
fn compile_nats_retry(raw: &mut raw::RawConfig, problems: &mut Problems) {
    let outputs: Vec<String> = [&raw.responses, &raw.dead_letter]
        .into_iter()
        .filter_map(|d| match d {
            DestinationConfig::Nats { subject, .. } => Some(subject.clone()),
            _ => None,
        })
        .collect();
    let SourceConfig::Nats { stream, subjects, consumer, retry_stream, retry_subject, .. } = &mut raw.source else {
        return;
    };
    let mut names_ok = true;
    for (place, name) in [("source.stream", &*stream), ("source.consumer", &*consumer)] {
        if let Err(e) = nats_name(name) {
            problems.add(place, e);
            names_ok = false;
        }
    }
    // A default derived from a bad name is reported once, where the user wrote the name.
    let (given_stream, given_subject) = (retry_stream.is_some(), retry_subject.is_some());
    let stream_name = retry_stream.get_or_insert_with(|| raw::default_nats_retry_stream(stream));
    match nats_name(stream_name) {
        Err(_) if !given_stream && !names_ok => {}
        Err(e) => problems.add("source.retry_stream", e),
        Ok(()) if stream_name == stream => {
            problems.add("source.retry_stream", "must be a stream of its own, not the source stream")
        }
        Ok(()) => {}
    }
    let subject = retry_subject.get_or_insert_with(|| raw::default_nats_retry_subject(consumer));
    if !given_subject && !names_ok {
        return;
    }
    if !nats_subject::is_publish_subject(subject) {
        problems.add(
            "source.retry_subject",
            format!("{subject:?} is not a subject one can publish to (dot-separated tokens, no wildcards, no spaces)"),
        );
    } else if let Some(filter) = subjects.iter().find(|f| nats_subject::subject_matches(f, subject)) {
        problems.add(
            "source.retry_subject",
            format!(
                "{subject:?} matches the source filter {filter:?}: the consumer would read retry records as events"
            ),
        );
    } else if outputs.contains(subject) {
        problems.add("source.retry_subject", format!("{subject:?} is also a results or dead-letter subject"));
    }
}

/// NATS stream and consumer names: no whitespace, `.`, `*`, `>`, path separators or
/// non-printable characters.
fn nats_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    match name.chars().find(|c| c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>' | '/' | '\\')) {
        Some(c) => Err(format!(
            "{name:?} is not a valid NATS name: {c:?} is not allowed (no spaces, '.', '*', '>', '/', '\\')"
        )),
        None => Ok(()),
    }
}

/// The most requests in flight `delivery.concurrency` may ask for.
pub const MAX_CONCURRENCY: usize = 100_000;

/// NATS secrets are read when connecting; checking them here makes a missing variable or
/// file a `check` error rather than a start-up failure.
fn check_nats_secrets(place: &str, credentials: &raw::NatsCredentials, problems: &mut Problems) {
    for (field, secret) in
        [("nkey", &credentials.nkey), ("token", &credentials.token), ("password", &credentials.password)]
    {
        if let Some(Err(e)) = secret.as_ref().map(secret::SecretRef::resolve) {
            problems.add(format!("{place}.{field}"), e);
        }
    }
    for (field, path) in [
        ("creds_file", &credentials.creds_file),
        ("ca_file", &credentials.ca_file),
        ("client_cert", &credentials.client_cert),
        ("client_key", &credentials.client_key),
    ] {
        if let Some(p) = path {
            if std::fs::metadata(p).is_err() {
                problems.add(format!("{place}.{field}"), format!("cannot read {p}"));
            }
        }
    }
}

#[cfg(test)]
mod tests;
