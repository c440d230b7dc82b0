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

use futures::StreamExt as _;
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
use crate::trigger::{match_event, ConditionError, Match};

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

/// Messages parsed, matched and rendered at once, ahead of the one being handed over.
const PREPARE_AHEAD: usize = 64;

/// How many bytes of messages (payload and headers) may be read ahead of their final
/// outcomes, at most, in KiB. The event count alone would let large events take
/// `max_pending` times their size; a parsed and rendered event takes a few times its bytes,
/// so this keeps the read-ahead within a few tens of MiB whatever the events weigh.
pub const READ_AHEAD_KIB: usize = 8 * 1024;

/// The read-ahead bytes one message takes, in KiB (at least one; a message larger than the
/// whole budget takes all of it, so it still goes through, alone).
pub fn read_ahead_kib(message: &Message) -> u32 {
    let bytes = message.payload.len() + message.headers.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
    bytes.div_ceil(1024).clamp(1, READ_AHEAD_KIB) as u32
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
    let limit = crate::dispatch::max_pending(&config);
    let pending = Arc::new(Semaphore::new(limit));
    let bytes = Arc::new(Semaphore::new(READ_AHEAD_KIB));
    let (tx, rx) = mpsc::channel::<Message>(256);
    let source_task = tokio::spawn(source.run(tx, ready, fetch_stop.clone()));
    // The intake runs on the runtime's worker threads rather than on the thread that
    // called `run` (`block_on` in main): each message's preparation is a task whose end
    // wakes the intake, and each job it hands over wakes a lane task. From a worker, both
    // go through the worker's own run queue; from the caller's thread, every one was a
    // cross-thread wake-up (futex calls and context switches were ~15 % of the samples).
    let intake = tokio::spawn(intake(
        config.clone(),
        dispatcher.clone(),
        publisher,
        shutdown.clone(),
        redelivers,
        rx,
        pending.clone(),
        bytes,
    ));
    if let Err(e) = intake.await {
        if e.is_panic() {
            // A panic in the intake ends the process, as it did when it ran on this thread.
            std::panic::resume_unwind(e.into_panic());
        }
    }
    let all_done = pending.acquire_many(limit as u32);
    let drained = if shutdown.is_cancelled() {
        tokio::time::timeout(config.delivery.shutdown_timeout, all_done).await.is_ok()
    } else {
        tokio::select! {
            _ = all_done => true,
            _ = async { shutdown.cancelled().await; tokio::time::sleep(config.delivery.shutdown_timeout).await } => false,
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

/// Reads messages until the source ends or `shutdown` fires: parsing, matching and
/// rendering run on every core, several messages at once; their outcomes are taken in source
/// order, so jobs reach their lanes in event order.
#[allow(clippy::too_many_arguments)]
async fn intake(
    config: Arc<Config>,
    dispatcher: Arc<Dispatcher>,
    publisher: Publisher,
    shutdown: CancellationToken,
    redelivers: bool,
    rx: mpsc::Receiver<Message>,
    pending: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
) {
    let intaker =
        Intaker { config: &config, dispatcher: &dispatcher, publisher: &publisher, cancel: &shutdown, redelivers };
    let reads = {
        let (shutdown, config) = (shutdown.clone(), config.clone());
        futures::stream::unfold(rx, move |mut rx| {
            let (pending, bytes, shutdown, config) = (pending.clone(), bytes.clone(), shutdown.clone(), config.clone());
            async move {
                let message = tokio::select! {
                    m = rx.recv() => m?,
                    _ = shutdown.cancelled() => return None,
                };
                // Bounded read-ahead: the source waits while `limit` events, or READ_AHEAD_KIB
                // of them, are not final.
                let permit = tokio::select! {
                    p = pending.acquire_owned() => p.expect("semaphore open"),
                    _ = shutdown.cancelled() => return None,
                };
                let weight = read_ahead_kib(&message);
                let held = tokio::select! {
                    p = bytes.acquire_many_owned(weight) => p.expect("semaphore open"),
                    _ = shutdown.cancelled() => return None,
                };
                let prepared = tokio::spawn(async move { prepare(&config, message) });
                let prepared = async move {
                    let prepared = prepared.await.map(|mut p| {
                        p.bytes = Some(held);
                        p
                    });
                    (prepared, permit)
                };
                Some((prepared, rx))
            }
        })
        .buffered(PREPARE_AHEAD)
    };
    let mut reads = Box::pin(reads);
    while let Some((prepared, permit)) = reads.next().await {
        match prepared {
            Ok(prepared) => {
                intaker.finish(prepared, permit).await;
            }
            // A panic while preparing one message: its ack is gone with it (unsettled, so the
            // message is read again after a restart); the others go on.
            Err(e) => tracing::error!(error = %e, "preparing a message failed"),
        }
        if shutdown.is_cancelled() {
            break;
        }
    }
}

/// A message parsed, matched and rendered: what the sequential stage hands over.
pub struct Prepared {
    message: Message,
    work: Work,
    /// The read-ahead bytes the message holds until its outcomes are final.
    bytes: Option<tokio::sync::OwnedSemaphorePermit>,
}

enum Work {
    /// Dead-letter the message with this reason.
    DeadLetter { reason: &'static str, detail: String, event: Option<Box<Event>>, retry: Option<RetryInfo> },
    /// Results and jobs for a parsed event.
    Event { event: Box<Event>, plans: Vec<(Match, Planned)>, condition_failures: Vec<ConditionError> },
}

/// The part of the intake that needs no I/O: parse, match, render. Runs in parallel.
pub fn prepare(config: &Config, message: Message) -> Prepared {
    let m = metrics::get();
    m.events_received.with_label_values(&[message.coords.kind()]).inc();
    // A line cut at `delivery.max_event_bytes` by the file source: too large, said as such.
    if let Some((cut, size)) = message.coords.truncation() {
        let detail = format!(
            "the line holds {size} bytes, over delivery.max_event_bytes ({cut}); the dead letter carries its beginning"
        );
        let work = Work::DeadLetter { reason: "too_large", detail, event: None, retry: None };
        return Prepared { message, work, bytes: None };
    }
    let ce = CloudEventHeaders::from_headers(message.headers.iter().map(|(k, v)| (k.as_str(), v.as_slice())));
    let event = match parse_event(&message.payload, ce.as_ref()) {
        Ok(mut e) => {
            if e.trace.is_none() {
                e.trace = crate::trace::TraceParent::from_headers(
                    message.headers.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
                );
            }
            Box::new(e)
        }
        Err(e) => {
            m.events_invalid.with_label_values(&[e.reason()]).inc();
            tracing::warn!(reason = e.reason(), source = %message.coords, "invalid event sent to the dead letter");
            let work = Work::DeadLetter { reason: e.reason(), detail: e.to_string(), event: None, retry: None };
            return Prepared { message, work, bytes: None };
        }
    };
    let (matches, condition_failures) = match &message.retry {
        Some(Err(reason)) => {
            let detail = format!("a record of the retry stage whose retry headers cannot be read: {reason}");
            let work = Work::DeadLetter { reason: "invalid_retry_record", detail, event: Some(event), retry: None };
            return Prepared { message, work, bytes: None };
        }
        Some(Ok(info)) => match retry_match(config, info) {
            Some(mt) => (vec![mt], Vec::new()),
            None => {
                let detail = format!(
                    "a retry of action {:?} for trigger {:?}, which is no longer configured: the delivery is dropped",
                    info.action, info.trigger
                );
                let retry = Some(info.clone());
                let work = Work::DeadLetter { reason: "not_configured", detail, event: Some(event), retry };
                return Prepared { message, work, bytes: None };
            }
        },
        None => match_event(&config.triggers, &event),
    };
    let plans = matches.iter().map(|mt| (*mt, plan(config, &event, mt))).collect();
    Prepared { message, work: Work::Event { event, plans, condition_failures }, bytes: None }
}

impl Intaker<'_> {
    /// One message: dead letter, results, or jobs for the dispatcher.
    pub async fn handle(&self, message: Message, permit: tokio::sync::OwnedSemaphorePermit) -> Intake {
        self.finish(prepare(self.config, message), permit).await
    }

    /// The sequential part of the intake, in source order: publish what is final at once,
    /// hand jobs to their lanes.
    pub async fn finish(&self, prepared: Prepared, permit: tokio::sync::OwnedSemaphorePermit) -> Intake {
        let m = metrics::get();
        let Prepared { message, work, bytes } = prepared;
        let (event, plans, condition_failures) = match work {
            Work::DeadLetter { reason, detail, event, retry } => {
                return self.dead_letter(message, reason, &detail, event.as_deref(), retry.as_ref()).await;
            }
            Work::Event { event, plans, condition_failures } => (event, plans, condition_failures),
        };
        for (mt, _) in &plans {
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
        if plans.is_empty() && skipped.is_empty() {
            m.events_unmatched.inc();
            message.ack.settle(Settle::Done);
            return Intake::Unmatched;
        }
        let retry = message.retry.as_ref().and_then(|r| r.as_ref().ok());
        let attempts_before = retry.map_or(0, |r| r.attempts);
        let first_attempt_ms = retry.map(|r| r.first_attempt_ms);
        let returning = retry.is_some();
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
        let inflight = Arc::new(InFlight::new(*event, message, count, [Some(permit), bytes].into_iter().flatten()));
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
