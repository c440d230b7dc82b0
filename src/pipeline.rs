//! The main loop: source messages in, events parsed and matched, jobs handed to the
//! dispatcher, dead letters for what cannot be an event, and the drain at the end.
//!
//! Every message is accounted for on the output before its source position moves: a
//! dead letter (not an event, a broken or orphaned retry record), one result per matched
//! (trigger, action) pair (delivered, failed, skipped, dry_run), a `skipped` result with
//! reason `condition_error` for each action of a trigger whose condition could not be
//! evaluated; an event that matches no trigger is counted (`hookbridge_events_unmatched_total`)
//! and has no output of its own.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::dispatch::{Dispatcher, InFlight, Job};
use crate::event::{parse_event, CloudEventHeaders, Event};
use crate::metrics;
use crate::output::{now_rfc3339, DeadLetter, DeliveryResult, ErrorBody};
use crate::publish::{PublishFailure, Publisher};
use crate::render::{plan, Planned};
use crate::source::{Message, RetryInfo, Settle, Source};
use crate::trigger::{match_event, Match};

/// How long a broker that redelivers waits before offering again a message whose dead
/// letter the destination refused for good.
const REDELIVER_UNPUBLISHABLE: Duration = Duration::from_secs(60);

/// Why `run` stopped with an error.
#[derive(Debug, Error)]
pub enum RunError {
    /// The source failed.
    #[error("source: {0}")]
    Source(#[from] crate::source::SourceError),
    /// HTTP clients could not be built.
    #[error(transparent)]
    Dispatch(#[from] crate::dispatch::DispatchError),
    /// The source task panicked or was aborted.
    #[error("source task: {0}")]
    SourceTask(#[from] tokio::task::JoinError),
}

/// How many events may be read ahead of their final outcomes, at most.
pub fn max_pending(config: &Config) -> usize {
    (config.delivery.concurrency * 4).clamp(64, 16_384)
}

/// What the intake did with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intake {
    /// Not an event, or a retry record that cannot be run: dead-lettered, settled.
    DeadLettered(&'static str),
    /// Matched no trigger and no condition failed: settled, nothing published.
    Unmatched,
    /// Every pair got its result at once (skipped, condition errors): settled.
    Reported,
    /// Jobs handed to the dispatcher: settled once each has its outcome.
    Dispatched(usize),
    /// The output could not be written before shutdown: left unsettled, read again later.
    Unsettled,
}

/// What the intake needs besides the message.
pub struct Intaker<'a> {
    /// The compiled config.
    pub config: &'a Config,
    /// Where jobs go.
    pub dispatcher: &'a Arc<Dispatcher>,
    /// Results and dead letters.
    pub publisher: &'a Publisher,
    /// Cancels publishing at shutdown.
    pub cancel: &'a CancellationToken,
    /// Whether the source offers an unsettled message again by itself (JetStream): then a
    /// message whose dead letter the destination refuses stays unacknowledged.
    pub redelivers: bool,
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
    let redelivers = source.redelivers_unsettled();
    let dispatcher = Dispatcher::new(config.clone(), publisher.clone(), source.retry_stage(), delivery_stop.clone())?;
    let limit = max_pending(&config);
    let pending = Arc::new(Semaphore::new(limit));
    let (tx, mut rx) = mpsc::channel::<Message>(256);
    let source_task = tokio::spawn(source.run(tx, ready, fetch_stop.clone()));
    let intaker =
        Intaker { config: &config, dispatcher: &dispatcher, publisher: &publisher, cancel: &shutdown, redelivers };
    loop {
        let message = tokio::select! {
            m = rx.recv() => match m { Some(m) => m, None => break },
            _ = shutdown.cancelled() => break,
        };
        // Bounded read-ahead: the source waits while `limit` events are not final.
        let permit = tokio::select! {
            p = pending.clone().acquire_owned() => p.expect("semaphore open"),
            _ = shutdown.cancelled() => break,
        };
        intaker.handle(message, permit).await;
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
    source_task.await??;
    if !drained {
        // Not an error: unsettled events keep their source position and are read again.
        tracing::warn!(
            events = limit - pending.available_permits(),
            "shutdown deadline passed with deliveries still in flight; they will be delivered again after restart"
        );
    }
    Ok(())
}

impl Intaker<'_> {
    /// One message: dead letter, results, or jobs for the dispatcher.
    pub async fn handle(&self, message: Message, permit: tokio::sync::OwnedSemaphorePermit) -> Intake {
        let m = metrics::get();
        let source_type = message.coords.get("type").and_then(|t| t.as_str()).unwrap_or("unknown").to_string();
        m.events_received.with_label_values(&[&source_type]).inc();
        let ce = CloudEventHeaders::from_headers(message.headers.iter().map(|(k, v)| (k.as_str(), v.as_slice())));
        let event = match parse_event(&message.payload, ce.as_ref()) {
            Ok(e) => e,
            Err(e) => {
                m.events_invalid.with_label_values(&[e.reason()]).inc();
                tracing::warn!(reason = e.reason(), source = %message.coords, "invalid event sent to the dead letter");
                return self.dead_letter(message, e.reason(), &e.to_string(), None, None).await;
            }
        };
        let (matches, condition_failures) = match &message.retry {
            Some(Err(reason)) => {
                let detail = format!("a record of the retry stage whose retry headers cannot be read: {reason}");
                return self.dead_letter(message, "invalid_retry_record", &detail, Some(&event), None).await;
            }
            Some(Ok(info)) => match retry_match(self.config, info) {
                Some(mt) => (vec![mt], Vec::new()),
                None => {
                    let detail = format!(
                        "a retry of action {:?} for trigger {:?}, which is no longer configured: the delivery is dropped",
                        info.action, info.trigger
                    );
                    let info = info.clone();
                    return self.dead_letter(message, "not_configured", &detail, Some(&event), Some(&info)).await;
                }
            },
            None => {
                let (matches, errors) = match_event(&self.config.triggers, &event);
                (matches, errors)
            }
        };
        for mt in &matches {
            m.trigger_matches
                .with_label_values(&[&self.config.triggers[mt.trigger].name, &self.config.actions[mt.action].name])
                .inc();
        }
        // A condition that cannot be evaluated is the config's problem, not the event's: each
        // action of that trigger gets a `skipped` result saying why.
        let mut skipped: Vec<DeliveryResult> = Vec::new();
        for err in &condition_failures {
            m.condition_errors.with_label_values(&[&err.trigger]).inc();
            tracing::warn!(trigger = %err.trigger, error = %err.message, event_id = %event.id, "condition failed to evaluate");
            if let Some(t) = self.config.triggers.iter().position(|t| t.name == err.trigger) {
                for &action in &self.config.triggers[t].actions {
                    let mt = Match { trigger: t, action, mention: None };
                    skipped.push(self.skipped(&event, &mt, "condition_error", &err.message));
                }
            }
        }
        if matches.is_empty() && skipped.is_empty() {
            m.events_unmatched.inc();
            message.ack.settle(Settle::Done);
            return Intake::Unmatched;
        }
        let retry = message.retry.as_ref().and_then(|r| r.as_ref().ok());
        let attempts_before = retry.map_or(0, |r| r.attempts);
        let first_attempt_ms = retry.map(|r| r.first_attempt_ms);
        let returning = retry.is_some();
        let plans: Vec<(Match, Planned)> = matches.iter().map(|mt| (*mt, plan(self.config, &event, mt))).collect();
        for (mt, planned) in &plans {
            if let Planned::Skip(reason) = planned {
                skipped.push(self.skipped(&event, mt, reason, skip_detail(reason)));
            }
        }
        let key = event.object_key();
        for result in &skipped {
            let action = self.config.actions.iter().find(|a| a.name == result.action);
            if let Some(a) = action {
                m.deliveries.with_label_values(&[&a.name, a.kind.as_str(), "skipped"]).inc();
            }
            if let Err(PublishFailure::Interrupted) = self.publisher.response(&key, result, self.cancel).await {
                return Intake::Unsettled;
            }
        }
        let sends: Vec<(Match, Planned)> =
            plans.into_iter().filter(|(_, p)| matches!(p, Planned::Send { .. })).collect();
        if sends.is_empty() {
            message.ack.settle(Settle::Done);
            return Intake::Reported;
        }
        m.events_pending.inc();
        let count = sends.len();
        let inflight = Arc::new(InFlight::new(event, message, count, Some(permit)));
        for (mt, planned) in sends {
            let Planned::Send { request, connection, missing, invalid } = planned else {
                unreachable!("filtered above")
            };
            self.dispatcher.submit(Job {
                inflight: inflight.clone(),
                matched: mt,
                request,
                connection,
                missing,
                invalid,
                attempts_before,
                first_attempt_ms,
                returning,
            });
        }
        Intake::Dispatched(count)
    }

    /// Dead-letters a message and settles it. A destination that refuses the dead letter for
    /// good is logged and counted by the publisher; the message then stays unacknowledged
    /// where the broker offers it again by itself, and is settled elsewhere (a Kafka
    /// partition must not stop behind it).
    async fn dead_letter(
        &self,
        message: Message,
        reason: &'static str,
        detail: &str,
        event: Option<&Event>,
        retry: Option<&RetryInfo>,
    ) -> Intake {
        let key = event.map(Event::object_key).unwrap_or_default();
        let letter = DeadLetter {
            reason,
            detail,
            source: &message.coords,
            raw: &message.payload,
            event_id: event.map(|e| e.id.as_str()),
            trigger: retry.map(|r| r.trigger.as_str()),
            action: retry.map(|r| r.action.as_str()),
        };
        match self.publisher.dead_letter(&key, letter, self.cancel).await {
            Ok(()) => message.ack.settle(Settle::Done),
            Err(PublishFailure::Interrupted) => return Intake::Unsettled,
            Err(PublishFailure::Permanent(e)) => {
                tracing::error!(reason, source = %message.coords, error = %e, "the dead letter of this message cannot be published");
                if self.redelivers {
                    message.ack.settle(Settle::Redeliver(REDELIVER_UNPUBLISHABLE));
                    return Intake::Unsettled;
                }
                message.ack.settle(Settle::Done);
            }
        }
        Intake::DeadLettered(reason)
    }

    fn skipped(&self, event: &Event, mt: &Match, reason: &str, detail: &str) -> DeliveryResult {
        DeliveryResult {
            kind: "delivery",
            event_id: event.id.clone(),
            object: event.object_key(),
            trigger: self.config.triggers[mt.trigger].name.clone(),
            action: self.config.actions[mt.action].name.clone(),
            status: "skipped",
            attempts: 0,
            http_status: None,
            duration_ms: 0,
            request: None,
            response_excerpt: None,
            error: Some(ErrorBody { reason: reason.to_string(), detail: detail.to_string() }),
            webhook_id: None,
            mention: mt.mention,
            missing_placeholders: Vec::new(),
            time: now_rfc3339(),
        }
    }
}

fn skip_detail(reason: &str) -> &'static str {
    match reason {
        "disabled" => "the action is disabled",
        "no_test_connection" => "the action is in test status and has no test_connection",
        _ => "not sent",
    }
}

fn retry_match(config: &Config, info: &RetryInfo) -> Option<Match> {
    let trigger = config.triggers.iter().position(|t| t.name == info.trigger)?;
    let action = config.action_index(&info.action)?;
    // The action must still be linked to the trigger: a retry must not send what the
    // current config would not.
    config.triggers[trigger].actions.contains(&action).then_some(Match { trigger, action, mention: info.mention })
}
