//! The main loop: source messages in, events parsed and matched, jobs handed to the
//! dispatcher, dead letters for what cannot be an event, and the drain at the end.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use serde_json::json;
use thiserror::Error;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::dispatch::{Completion, Dispatcher, InFlight, Job};
use crate::event::{parse_event, CloudEventHeaders, Event};
use crate::metrics;
use crate::publish::{now_rfc3339, DeadLetter, Publisher};
use crate::render::{plan, Planned};
use crate::source::{Message, Settle, Source};
use crate::trigger::{match_event, Match};

/// Why `run` stopped with an error.
#[derive(Debug, Error)]
pub enum RunError {
    /// The source failed.
    #[error("source: {0}")]
    Source(#[from] crate::source::SourceError),
    /// HTTP clients could not be built.
    #[error(transparent)]
    Dispatch(#[from] crate::dispatch::DispatchError),
}

/// How many events may be read ahead of their final outcomes, at most.
pub fn max_pending(config: &Config) -> usize {
    (config.delivery.concurrency * 4).clamp(64, 16_384)
}

/// Runs until the source ends (then finishes every delivery) or `shutdown` fires (then
/// drains within `delivery.shutdown_timeout`).
pub async fn run(
    config: Arc<Config>,
    source: Box<dyn Source>,
    publisher: Publisher,
    ready: Arc<AtomicBool>,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let fetch_stop = shutdown.child_token();
    let delivery_stop = CancellationToken::new();
    let dispatcher = Dispatcher::new(config.clone(), publisher.clone(), source.retry_stage(), delivery_stop.clone())?;
    let limit = max_pending(&config);
    let pending = Arc::new(Semaphore::new(limit));
    let (tx, mut rx) = mpsc::channel::<Message>(256);
    let source_task = tokio::spawn(source.run(tx, ready, fetch_stop.clone()));
    while let Some(message) = rx.recv().await {
        // Bounded read-ahead: the source waits while `limit` events are not final.
        let permit = tokio::select! {
            p = pending.clone().acquire_owned() => p.expect("semaphore open"),
            _ = shutdown.cancelled() => break,
        };
        handle(&config, &dispatcher, &publisher, message, permit).await;
    }
    drop(rx);
    let all_done = pending.acquire_many(limit as u32);
    let drained = if shutdown.is_cancelled() {
        tokio::time::timeout(config.delivery.shutdown_timeout.0, all_done).await.is_ok()
    } else {
        tokio::select! {
            _ = all_done => true,
            _ = async { shutdown.cancelled().await; tokio::time::sleep(config.delivery.shutdown_timeout.0).await } => false,
        }
    };
    delivery_stop.cancel();
    // The source settles what the drain made final (commits, acks) before it returns, so it
    // is awaited after the drain: shutdown takes about `shutdown_timeout`, not twice that.
    let source_result = source_task.await.unwrap_or_else(|e| Err(crate::source::SourceError::Broker(e.to_string())));
    source_result?;
    if !drained {
        // Not an error: unsettled events keep their source position and are read again.
        tracing::warn!(
            events = limit - pending.available_permits(),
            "shutdown deadline passed with deliveries still in flight; they will be delivered again after restart"
        );
    }
    Ok(())
}

/// One message: dead letter, nothing to do, or jobs for the dispatcher.
pub async fn handle(
    config: &Config,
    dispatcher: &Arc<Dispatcher>,
    publisher: &Publisher,
    message: Message,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let m = metrics::get();
    let source_type = message.coords.get("type").and_then(|t| t.as_str()).unwrap_or("unknown").to_string();
    m.events_received.with_label_values(&[&source_type]).inc();
    let ce = CloudEventHeaders::from_headers(message.headers.iter().map(|(k, v)| (k.as_str(), v.as_slice())));
    let event = match parse_event(&message.payload, ce.as_ref()) {
        Ok(e) => e,
        Err(e) => {
            m.events_invalid.with_label_values(&[e.reason()]).inc();
            tracing::warn!(reason = e.reason(), source = %message.coords, "invalid event sent to the dead letter");
            publisher
                .dead_letter(
                    "",
                    DeadLetter {
                        reason: e.reason(),
                        detail: &e.to_string(),
                        source: &message.coords,
                        raw: &message.payload,
                        event_id: None,
                        action: None,
                        trigger: None,
                    },
                )
                .await;
            // The dead letter is durable: this message is final.
            message.ack.settle(Settle::Done);
            return;
        }
    };
    let matches = match &message.retry {
        Some(Ok(info)) => retry_match(config, info),
        Some(Err(_)) => Vec::new(),
        None => {
            let (matches, errors) = match_event(&config.triggers, &event);
            for err in errors {
                m.condition_errors.with_label_values(&[&err.trigger]).inc();
                tracing::warn!(trigger = %err.trigger, error = %err.message, event_id = %event.id, "condition failed to evaluate");
            }
            matches
        }
    };
    for mt in &matches {
        m.trigger_matches
            .with_label_values(&[&config.triggers[mt.trigger].name, &config.actions[mt.action].name])
            .inc();
    }
    if matches.is_empty() {
        message.ack.settle(Settle::Done);
        return;
    }
    let retry = message.retry.as_ref().and_then(|r| r.as_ref().ok());
    let attempts_before = retry.map_or(0, |r| r.attempts);
    let first_attempt_ms = retry.map(|r| r.first_attempt_ms);
    let plans: Vec<(Match, Planned)> = matches.iter().map(|mt| (*mt, plan(config, &event, mt))).collect();
    m.events_pending.inc();
    let inflight = InFlight::new(event, message, plans.len(), Some(permit));
    for (mt, planned) in plans {
        match planned {
            Planned::Skip(reason) => {
                publish_skip(config, publisher, &inflight.event, &mt, reason).await;
                inflight.complete(Completion::Final);
            }
            Planned::Send { request, connection, missing } => dispatcher.submit(Job {
                inflight: inflight.clone(),
                matched: mt,
                request,
                connection,
                missing,
                attempts_before,
                first_attempt_ms,
            }),
        }
    }
}

fn retry_match(config: &Config, info: &crate::source::RetryInfo) -> Vec<Match> {
    let trigger = config.triggers.iter().position(|t| t.name == info.trigger);
    let action = config.action_index(&info.action);
    match (trigger, action) {
        (Some(trigger), Some(action)) => vec![Match { trigger, action, mention: info.mention }],
        _ => {
            tracing::warn!(trigger = %info.trigger, action = %info.action, "retry for a trigger or action no longer configured: dropped");
            Vec::new()
        }
    }
}

async fn publish_skip(config: &Config, publisher: &Publisher, event: &Event, mt: &Match, reason: &str) {
    let action = &config.actions[mt.action];
    metrics::get().deliveries.with_label_values(&[&action.name, action.kind.as_str(), "skipped"]).inc();
    let message = json!({
        "kind": "delivery",
        "event_id": event.id,
        "object": event.object_key(),
        "trigger": config.triggers[mt.trigger].name,
        "action": action.name,
        "status": "skipped",
        "attempts": 0,
        "http_status": null,
        "duration_ms": 0,
        "request": null,
        "response_excerpt": null,
        "error": {"reason": reason, "detail": match reason {
            "disabled" => "the action is disabled",
            "no_test_connection" => "the action is in test status and has no test_connection",
            _ => reason,
        }},
        "time": now_rfc3339(),
    });
    publisher.response(&event.object_key(), &message).await;
}
