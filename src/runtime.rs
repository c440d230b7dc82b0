//! Wiring: builds the source, the sinks and the server from a config and runs the bridge;
//! also the one-shot `send`.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use serde_json::{json, Value};
use thiserror::Error;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Input, Output};
use crate::dispatch::{Dispatcher, InFlight, Job, Outcome};
use crate::event::Event;
use crate::output::{excerpt, DeliveryResult, ObjectUpdate};
use crate::pipeline::{self, RunError};
use crate::publish::Publisher;
use crate::render::{plan, Planned};
use crate::sink::Sink;
use crate::source::{Ack, Coords, Message, RetryStage};
use crate::trigger::Match;

/// Why the bridge could not start or stopped.
#[derive(Debug, Error)]
pub enum StartError {
    /// A destination could not be opened.
    #[error("{place}: {source}")]
    Destination {
        /// `responses` or `dead_letter`.
        place: &'static str,
        /// What failed.
        #[source]
        source: crate::sink::OpenError,
    },
    /// The source could not be set up.
    #[error("source: {0}")]
    Source(#[from] crate::source::OpenError),
    /// The metrics server could not bind.
    #[error("server.listen: {0}")]
    Server(std::io::Error),
    /// The source was not ready within `startup_timeout`.
    #[error("not ready within startup_timeout ({0:?}): the source could not be reached")]
    NotReady(std::time::Duration),
    /// The run failed.
    #[error(transparent)]
    Run(#[from] RunError),
}

/// Opens one destination; `place` names it in errors.
async fn open_sink(place: &'static str, dest: &Output, source: &Input) -> Result<Arc<dyn Sink>, StartError> {
    crate::sink::open(dest, source).await.map_err(|source| StartError::Destination { place, source })
}

/// Runs the bridge until the source ends or `shutdown` fires.
pub async fn run(config: Arc<Config>, shutdown: CancellationToken) -> Result<(), StartError> {
    let ready = Arc::new(AtomicBool::new(false));
    // The ops server outlives the drain (it stops when this function returns, whatever the
    // path): /metrics and /healthz answer while deliveries drain, /readyz says 503.
    let server_stop = CancellationToken::new();
    let _server_stop = server_stop.clone().drop_guard();
    if let Some(listen) = &config.listen {
        let addr = crate::server::serve(listen, ready.clone(), shutdown.clone(), server_stop.clone())
            .await
            .map_err(StartError::Server)?;
        tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    }
    // Brokers unreachable at start: not ready and retrying (NATS opening waits, Kafka's
    // source waits for its assignment), until ready, SIGTERM, or startup_timeout.
    let startup = config
        .startup_timeout
        .map(|limit| (limit, crate::server::watch_startup(ready.clone(), limit, shutdown.clone())));
    let opened = async {
        let responses = open_sink("responses", &config.responses, &config.source).await?;
        let dead_letter = open_sink("dead_letter", &config.dead_letter, &config.source).await?;
        let source = crate::source::open(&config, crate::dispatch::max_pending(&config)).await?;
        Ok::<_, StartError>((Publisher::new(responses, dead_letter, config.delivery.max_dead_letter_raw), source))
    };
    let opened = tokio::select! {
        opened = opened => Some(opened?),
        _ = shutdown.cancelled() => None,
    };
    if let Some((publisher, source)) = opened {
        pipeline::run(config, source, publisher, ready, shutdown.clone()).await?;
    }
    if let Some((limit, watch)) = startup {
        // Once shut down, the watch ends at once (having fired or not); otherwise it is moot.
        let fired = if shutdown.is_cancelled() || watch.is_finished() {
            watch.await.unwrap_or(false)
        } else {
            watch.abort();
            false
        };
        if fired {
            return Err(StartError::NotReady(limit));
        }
    }
    Ok(())
}

/// A sink that keeps nothing: `send` prints its report instead of publishing.
struct Discard;

#[async_trait::async_trait]
impl Sink for Discard {
    async fn publish(&self, _key: &str, _payload: &[u8]) -> Result<(), crate::sink::PublishError> {
        Ok(())
    }
}

/// Why `send` could not send.
#[derive(Debug, Error)]
pub enum SendError {
    /// No action has that name.
    #[error("no action named {0:?}")]
    NoAction(String),
    /// The action is not linked to any trigger.
    #[error("action {0:?} is not linked to any trigger")]
    NotLinked(String),
    /// HTTP clients could not be built.
    #[error(transparent)]
    Clients(#[from] crate::dispatch::DispatchError),
    /// Interrupted before an outcome.
    #[error("interrupted")]
    Interrupted,
}

/// How `send` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    /// The endpoint took the request.
    Delivered,
    /// Rendered and not sent (`delivery.dry_run`).
    DryRun,
    /// Refused or retries exhausted.
    Failed,
    /// Not sent (disabled, no test connection, a condition).
    Skipped,
}

/// What `send` reports: the outcome, the request, the answer and any callback update. It
/// serializes as the JSON `send` prints.
#[derive(Debug, serde::Serialize)]
pub struct SendReport {
    /// How it ended (the `status` of `result`).
    #[serde(skip)]
    pub outcome: SendOutcome,
    /// The delivery result, as `run` would publish it, or why nothing was sent.
    result: SendResult,
    /// The request, secrets masked.
    #[serde(skip_serializing_if = "Option::is_none")]
    request: Option<crate::request::ShownRequest>,
    /// The answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    response: Option<SentAnswer>,
    /// The callback update the answer yields.
    #[serde(skip_serializing_if = "Option::is_none")]
    callback_update: Option<ObjectUpdate>,
}

/// The `result` of `send`.
#[derive(Debug, serde::Serialize)]
#[serde(untagged)]
enum SendResult {
    /// A delivery was attempted (or rendered, on a dry run).
    Delivery(Box<DeliveryResult>),
    /// Nothing was sent.
    Skipped {
        /// Always `skipped`, like the `status` of a delivery result.
        status: &'static str,
        /// Why (`disabled`, `no_test_connection`, …).
        reason: &'static str,
    },
}

/// The endpoint's answer as `send` shows it: the body cut to an excerpt.
#[derive(Debug, serde::Serialize)]
struct SentAnswer {
    status: u16,
    headers: serde_json::Map<String, Value>,
    body: String,
}

/// Sends one action for one event now, whatever the triggers say, and returns what a user
/// wants to see: the request, the answer, the outcome and any callback update. The
/// `webhook-id` is the one `run` sends for the same event and action.
pub async fn send_one(
    config: Arc<Config>,
    event: Event,
    raw: Vec<u8>,
    action_name: &str,
) -> Result<SendReport, SendError> {
    let action = config.action_index(action_name).ok_or_else(|| SendError::NoAction(action_name.to_string()))?;
    let trigger = config
        .triggers
        .iter()
        .position(|t| t.actions.contains(&action))
        .ok_or_else(|| SendError::NotLinked(action_name.to_string()))?;
    let mention = (config.triggers[trigger].on == crate::config_file::raw::TriggerOn::Mention
        && !event.mentions.is_empty())
    .then_some(0);
    let matched = Match { trigger, action, mention };
    let (request, connection, missing, invalid) = match plan(&config, &event, &matched) {
        Planned::Send { request, connection, missing, invalid } => (request, connection, missing, invalid),
        Planned::Skip(reason) => {
            return Ok(SendReport {
                outcome: SendOutcome::Skipped,
                result: SendResult::Skipped { status: "skipped", reason },
                request: None,
                response: None,
                callback_update: None,
            })
        }
    };
    let publisher = Publisher::new(Arc::new(Discard), Arc::new(Discard), config.delivery.max_dead_letter_raw);
    let dispatcher = Dispatcher::new(config.clone(), publisher, RetryStage::InProcess, CancellationToken::new())?;
    let message = Message { payload: raw, headers: Vec::new(), coords: Coords::Send, ack: Ack::none(), retry: None };
    let inflight = Arc::new(InFlight::new(event, message, 1, None));
    let job = Job {
        inflight,
        matched,
        request,
        connection,
        missing,
        invalid,
        attempts_before: 0,
        first_attempt_ms: None,
        returning: false,
    };
    let report = dispatcher.deliver(&job).await.ok_or(SendError::Interrupted)?;
    let result = SendResult::Delivery(Box::new(dispatcher.result_message(&job, &report)));
    let outcome = match report.status {
        Outcome::Delivered => SendOutcome::Delivered,
        Outcome::DryRun => SendOutcome::DryRun,
        // No durable stage here: a retry scheduled cannot happen, and would not be a delivery.
        Outcome::Failed | Outcome::RetryScheduled => SendOutcome::Failed,
    };
    let mut out =
        SendReport { outcome, result, request: Some(job.request.shown()), response: None, callback_update: None };
    if let Some(answer) = &report.answer {
        let headers: serde_json::Map<String, Value> =
            answer.headers.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        out.response = Some(SentAnswer { status: answer.status, headers, body: excerpt(&answer.body) });
        if let Some(cb) = &config.actions[action].callback {
            out.callback_update = dispatcher.callback_update(&job, cb, answer);
        }
    }
    Ok(out)
}
