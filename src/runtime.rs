//! Wiring: builds the source, the sinks and the server from a config and runs the bridge;
//! also the one-shot `send`.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use serde_json::{json, Value};
use thiserror::Error;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, DestinationConfig, SourceConfig};
use crate::dispatch::{excerpt, Dispatcher, InFlight, Job};
use crate::event::Event;
use crate::pipeline::{self, RunError};
use crate::publish::{FileSink, Publisher, Sink};
use crate::render::{plan, Planned};
use crate::source::file::FileSource;
use crate::source::{Ack, Message, RetryStage, Source};
use crate::trigger::Match;

/// Why the bridge could not start or stopped.
#[derive(Debug, Error)]
pub enum StartError {
    /// A destination could not be opened.
    #[error("{place}: {message}")]
    Destination {
        /// `responses` or `dead_letter`.
        place: &'static str,
        /// What failed.
        message: String,
    },
    /// The source could not be set up.
    #[error("source: {0}")]
    Source(String),
    /// The metrics server could not bind.
    #[error("server.listen: {0}")]
    Server(std::io::Error),
    /// The run failed.
    #[error(transparent)]
    Run(#[from] RunError),
}

/// Opens one destination.
pub async fn open_sink(
    place: &'static str,
    dest: &DestinationConfig,
    source: &SourceConfig,
) -> Result<Arc<dyn Sink>, StartError> {
    let err = |message: String| StartError::Destination { place, message };
    match dest {
        DestinationConfig::File { path } => {
            Ok(Arc::new(FileSink::open(path).map_err(|e| err(format!("cannot open {path}: {e}")))?))
        }
        DestinationConfig::Kafka { .. } => crate::kafka::open_sink(dest, source).await.map_err(err),
        DestinationConfig::Nats { .. } => crate::nats::open_sink(dest, source).await.map_err(err),
    }
}

/// Opens the configured source.
pub async fn open_source(config: &Config) -> Result<Box<dyn Source>, StartError> {
    match &config.source {
        SourceConfig::File { path, follow } => Ok(Box::new(FileSource::new(path, *follow))),
        SourceConfig::Kafka { .. } => crate::kafka::open_source(config).await.map_err(StartError::Source),
        SourceConfig::Nats { .. } => crate::nats::open_source(config).await.map_err(StartError::Source),
    }
}

/// Runs the bridge until the source ends or `shutdown` fires.
pub async fn run(config: Arc<Config>, shutdown: CancellationToken) -> Result<(), StartError> {
    let ready = Arc::new(AtomicBool::new(false));
    if let Some(listen) = &config.server.listen {
        let addr = crate::server::serve(listen, ready.clone(), shutdown.clone()).await.map_err(StartError::Server)?;
        tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    }
    let responses = open_sink("responses", &config.responses, &config.source).await?;
    let dead_letter = open_sink("dead_letter", &config.dead_letter, &config.source).await?;
    let publisher = Publisher::new(responses, dead_letter);
    let source = open_source(&config).await?;
    pipeline::run(config, source, publisher, ready, shutdown).await?;
    Ok(())
}

/// A sink that keeps nothing: `send` prints its report instead of publishing.
struct Discard;

#[async_trait::async_trait]
impl Sink for Discard {
    async fn publish(&self, _key: &str, _message: &Value) -> Result<(), crate::publish::PublishError> {
        Ok(())
    }
}

/// Sends one action for one event now, whatever the triggers say, and returns what a user
/// wants to see: the request, the answer, the outcome and any callback update.
pub async fn send_one(config: Arc<Config>, event: Event, raw: Vec<u8>, action_name: &str) -> Result<Value, String> {
    let action = config.action_index(action_name).ok_or_else(|| format!("no action named {action_name:?}"))?;
    let trigger = config
        .triggers
        .iter()
        .position(|t| t.actions.contains(&action))
        .ok_or_else(|| format!("action {action_name:?} is not linked to any trigger"))?;
    let matched = Match { trigger, action, mention: if event.mentions.is_empty() { None } else { Some(0) } };
    let (request, connection, missing) = match plan(&config, &event, &matched) {
        Planned::Send { request, connection, missing } => (request, connection, missing),
        Planned::Skip(reason) => return Ok(json!({"status": "skipped", "reason": reason})),
    };
    let publisher = Publisher::new(Arc::new(Discard), Arc::new(Discard));
    let dispatcher = Dispatcher::new(config.clone(), publisher, RetryStage::InProcess, CancellationToken::new())
        .map_err(|e| e.to_string())?;
    let message = Message {
        payload: raw,
        headers: Vec::new(),
        coords: json!({"type": "send"}),
        ack: Ack::none(),
        retry: None,
    };
    let inflight = InFlight::new(event, message, 1, None);
    let job = Job { inflight, matched, request, connection, missing, attempts_before: 0, first_attempt_ms: None };
    let report = dispatcher.deliver(&job).await.ok_or("interrupted")?;
    let mut out = json!({
        "result": dispatcher.result_message(&job, &report),
        "request": job.request.shown(),
    });
    if let Some(answer) = &report.answer {
        let headers: serde_json::Map<String, Value> =
            answer.headers.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        out["response"] = json!({"status": answer.status, "headers": headers, "body": excerpt(&answer.body)});
        if let Some(cb) = &config.actions[action].callback {
            out["callback_update"] = dispatcher.callback_update(&job, cb, answer).unwrap_or(Value::Null);
        }
    }
    Ok(out)
}
