//! Output messages (SPEC §5): delivery results and callback updates on `responses`, dead
//! letters on `dead_letter`, each behind one [`Sink`] interface whatever the transport.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use serde_json::{json, Map, Value};
use thiserror::Error;

use crate::metrics;

/// Why a message could not be published.
#[derive(Debug, Error)]
pub enum PublishError {
    /// Writing a file failed.
    #[error("write failed: {0}")]
    Io(#[from] std::io::Error),
    /// The broker refused or did not acknowledge.
    #[error("broker: {0}")]
    Broker(String),
}

/// A destination for output messages. `publish` returns only once the message is durable
/// (written and flushed, or acknowledged by the broker): source positions depend on it.
#[async_trait]
pub trait Sink: Send + Sync {
    /// Publishes one message under `key` (`class::key`).
    async fn publish(&self, key: &str, message: &Value) -> Result<(), PublishError>;
}

/// JSON Lines appended to a file, or written to stdout for `-`.
pub struct FileSink {
    out: std::sync::Mutex<Box<dyn Write + Send>>,
}

impl FileSink {
    /// Opens (appends to) `path`, or stdout for `-`.
    pub fn open(path: &str) -> std::io::Result<FileSink> {
        let out: Box<dyn Write + Send> = if path == "-" {
            Box::new(std::io::stdout())
        } else {
            Box::new(std::fs::OpenOptions::new().create(true).append(true).open(path)?)
        };
        Ok(FileSink { out: std::sync::Mutex::new(out) })
    }
}

#[async_trait]
impl Sink for FileSink {
    async fn publish(&self, _key: &str, message: &Value) -> Result<(), PublishError> {
        let mut line = serde_json::to_vec(message).map_err(|e| PublishError::Broker(e.to_string()))?;
        line.push(b'\n');
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        out.write_all(&line)?;
        out.flush()?;
        Ok(())
    }
}

/// Publishes results, callback updates and dead letters; retries a failing sink until it
/// takes the message, because the source position waits on it.
#[derive(Clone)]
pub struct Publisher {
    responses: Arc<dyn Sink>,
    dead_letter: Arc<dyn Sink>,
}

/// The raw bytes of a message, as dead letters carry them.
pub fn raw_field(raw: &[u8]) -> (Value, &'static str) {
    match std::str::from_utf8(raw) {
        Ok(text) => (Value::String(text.to_string()), "utf8"),
        Err(_) => (Value::String(base64::engine::general_purpose::STANDARD.encode(raw)), "base64"),
    }
}

impl Publisher {
    /// Builds a publisher over two sinks.
    pub fn new(responses: Arc<dyn Sink>, dead_letter: Arc<dyn Sink>) -> Publisher {
        Publisher { responses, dead_letter }
    }

    async fn send(sink: &Arc<dyn Sink>, key: &str, message: &Value, kind: &str) {
        let mut delay = Duration::from_millis(100);
        loop {
            match sink.publish(key, message).await {
                Ok(()) => return,
                Err(e) => {
                    metrics::get().publish_errors.with_label_values(&[kind]).inc();
                    tracing::warn!(kind, error = %e, "publishing failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// A delivery result or callback update, keyed by object.
    pub async fn response(&self, key: &str, message: &Value) {
        Self::send(&self.responses, key, message, "response").await;
    }

    /// A dead letter.
    pub async fn dead_letter(&self, key: &str, letter: DeadLetter<'_>) {
        metrics::get().dead_letters.with_label_values(&[metrics::dead_letter_reason(letter.reason)]).inc();
        let (raw, encoding) = raw_field(letter.raw);
        let mut m = Map::new();
        m.insert("kind".into(), json!("dead_letter"));
        m.insert("reason".into(), json!(letter.reason));
        m.insert("detail".into(), json!(letter.detail));
        m.insert("source".into(), letter.source.clone());
        m.insert("raw".into(), raw);
        m.insert("raw_encoding".into(), json!(encoding));
        if let Some(id) = letter.event_id {
            m.insert("event_id".into(), json!(id));
        }
        if let Some(a) = letter.action {
            m.insert("action".into(), json!(a));
        }
        if let Some(t) = letter.trigger {
            m.insert("trigger".into(), json!(t));
        }
        m.insert("time".into(), json!(now_rfc3339()));
        Self::send(&self.dead_letter, key, &Value::Object(m), "dead_letter").await;
    }
}

/// What a dead letter says.
pub struct DeadLetter<'a> {
    /// Short stable label.
    pub reason: &'a str,
    /// Human detail.
    pub detail: &'a str,
    /// Source coordinates.
    pub source: &'a Value,
    /// The original message bytes.
    pub raw: &'a [u8],
    /// Event id, when the message parsed.
    pub event_id: Option<&'a str>,
    /// Action, for a delivery that failed for good.
    pub action: Option<&'a str>,
    /// Trigger, for a delivery that failed for good.
    pub trigger: Option<&'a str>,
}

/// Now, as RFC 3339 with milliseconds.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
