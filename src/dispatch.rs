//! Delivery: per-(object, action) lanes that keep event order, a global concurrency limit,
//! per-connection in-flight caps and rate limits so one slow endpoint cannot starve the
//! others, per-attempt timeouts, retries with backoff and `Retry-After`, and the final
//! outcome of every delivery.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::action::{answer_error, Callback};
use crate::config::raw::CallbackWhen;
use crate::config::Config;
use crate::event::Event;
use crate::metrics;
use crate::net::{refused_in, Clients, Policy};
use crate::publish::{now_rfc3339, DeadLetter, Publisher};
use crate::request::Request;
use crate::retry::{next_delay, parse_retry_after, status_is_retryable};
use crate::source::{Ack, DurableRetry, Message, RetryInfo, RetryStage, Settle};
use crate::trigger::Match;

/// Bytes of an answer kept for callbacks; the result shows an excerpt of it.
const MAX_ANSWER_BYTES: usize = 1 << 20;
/// Characters of an answer shown in a result.
const EXCERPT_CHARS: usize = 512;

/// An event in flight: what parsed, what arrived, and the acknowledgement waiting for all
/// its deliveries.
pub struct InFlight {
    /// The parsed event.
    pub event: Event,
    /// The original message (kept for dead letters and the durable retry stage).
    pub message: Mutex<Option<Message>>,
    /// Source coordinates.
    pub coords: Value,
    /// The raw bytes.
    pub raw: Vec<u8>,
    remaining: Mutex<Remaining>,
}

struct Remaining {
    count: usize,
    redeliver: Option<Duration>,
    ack: Option<Ack>,
    _permit: Option<OwnedSemaphorePermit>,
}

/// How one delivery ended, as far as the source position is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// Final: delivered, failed for good, skipped, or safely in the durable retry stage.
    Final,
    /// Waiting for the broker to redeliver the message after this delay.
    Redeliver(Duration),
}

impl InFlight {
    /// Wraps a parsed message; `count` deliveries must complete before `ack` is settled.
    pub fn new(
        event: Event,
        mut message: Message,
        count: usize,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Arc<InFlight> {
        let ack = std::mem::replace(&mut message.ack, Ack::none());
        let coords = message.coords.clone();
        let raw = message.payload.clone();
        Arc::new(InFlight {
            event,
            coords,
            raw,
            message: Mutex::new(Some(message)),
            remaining: Mutex::new(Remaining { count, redeliver: None, ack: Some(ack), _permit: permit }),
        })
    }

    /// Records one delivery's completion; the last one settles the source position.
    pub fn complete(&self, how: Completion) {
        let mut r = self.remaining.lock().unwrap_or_else(|p| p.into_inner());
        if let Completion::Redeliver(d) = how {
            r.redeliver = Some(r.redeliver.map_or(d, |cur| cur.min(d)));
        }
        r.count = r.count.saturating_sub(1);
        if r.count == 0 {
            // Every outcome for this message is final (or parked in a durable stage), and every
            // result was published before we got here: only now may the position move.
            let settle = r.redeliver.map_or(Settle::Done, Settle::Redeliver);
            if let Some(ack) = r.ack.take() {
                ack.settle(settle);
            }
            r._permit = None;
            metrics::get().events_pending.dec();
        }
    }
}

/// One delivery to make.
pub struct Job {
    /// The event it belongs to.
    pub inflight: Arc<InFlight>,
    /// The (trigger, action) pair.
    pub matched: Match,
    /// The rendered request.
    pub request: Request,
    /// Index of the connection it goes through.
    pub connection: usize,
    /// Placeholders that resolved to nothing.
    pub missing: Vec<String>,
    /// Attempts made before this job (long retries).
    pub attempts_before: u32,
    /// When the first attempt started (unix ms), if one did.
    pub first_attempt_ms: Option<i64>,
}

/// The answer to one attempt.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Headers (lower-case names).
    pub headers: Vec<(String, String)>,
    /// Body, up to 1 MiB.
    pub body: Vec<u8>,
}

/// How a delivery ended, as results and metrics name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The endpoint took it.
    Delivered,
    /// Refused for good or retries exhausted; dead-lettered.
    Failed,
    /// Rendered and reported, not sent (`delivery.dry_run`).
    DryRun,
    /// Handed to the durable retry stage; it comes back later, so no result yet.
    RetryScheduled,
}

impl Outcome {
    /// The stable label used in results and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Failed => "failed",
            Outcome::DryRun => "dry_run",
            Outcome::RetryScheduled => "retry_scheduled",
        }
    }
}

/// The final word on one delivery.
#[derive(Debug, Clone)]
pub struct Report {
    /// How the delivery ended.
    pub status: Outcome,
    /// Attempts made in all.
    pub attempts: u32,
    /// `{reason, detail}` when not delivered.
    pub error: Option<(String, String)>,
    /// The last HTTP answer.
    pub answer: Option<Answer>,
    /// From the first attempt to now.
    pub duration: Duration,
    /// What the source position should do.
    pub completion: Completion,
}

struct ConnLimits {
    in_flight: Arc<Semaphore>,
    rate: Option<DefaultDirectRateLimiter>,
}

struct LaneMap {
    lanes: Mutex<HashMap<(String, usize), mpsc::UnboundedSender<Job>>>,
    parked: Mutex<ParkedLanes>,
}

/// How long after its due time the oldest parked delivery of a lane may take to come back
/// before the lane is released (see [`ParkedLanes`]).
const PARK_STALE_MS: i64 = 10 * 60 * 1000;

/// Lane parking: per lane (object, action), the deliveries waiting in the durable retry
/// stage, oldest first, with the time each is due back.
///
/// Once a delivery is handed to the retry stage, every later delivery of the same lane is
/// handed there too, behind it, without being attempted (attempts 0, no quick attempts). A
/// delivery coming back from the stage is attempted only when it is the oldest parked one
/// of its lane; otherwise it is parked again, at the back. The lane is free again once
/// every parked delivery came back to a final outcome. So within a replica, deliveries of
/// one object and action keep their event order across long retries, and the source
/// partition keeps flowing for the other objects meanwhile.
///
/// Across restarts this state is gone, and what holds is weaker. The retry partition moves
/// with its source partition and is read in order, so parked deliveries come back in the
/// order they were parked — except a delivery parked again after failing once more, which
/// sits behind its followers in the topic. And an event read from the source after a
/// restart does not know that earlier deliveries of its object wait in the retry topic: it
/// may overtake them. Finally, a lane whose oldest parked delivery does not come back within
/// [`PARK_STALE_MS`] after it was due (its partition moved to another replica, or its
/// trigger left the config) is released, so that it cannot hold the lane forever.
#[derive(Default)]
struct ParkedLanes {
    lanes: HashMap<(String, usize), VecDeque<(ParkId, i64)>>,
    last_sweep_ms: i64,
}

/// Which delivery is parked: event, trigger and mention (the lane gives object and action).
#[derive(Debug, Clone, PartialEq, Eq)]
struct ParkId {
    event_id: String,
    trigger: usize,
    mention: Option<usize>,
}

impl ParkId {
    fn of(job: &Job) -> ParkId {
        ParkId { event_id: job.inflight.event.id.clone(), trigger: job.matched.trigger, mention: job.matched.mention }
    }
}

impl ParkedLanes {
    /// Releases lanes whose oldest parked delivery is long overdue; at most every 10 s.
    fn sweep(&mut self, now_ms: i64) {
        if now_ms - self.last_sweep_ms < 10_000 {
            return;
        }
        self.last_sweep_ms = now_ms;
        self.lanes.retain(|_, q| q.front().is_some_and(|(_, due)| now_ms <= due + PARK_STALE_MS));
    }
}

/// Sends requests and reports outcomes.
pub struct Dispatcher {
    config: Arc<Config>,
    clients: Clients,
    policy: Policy,
    global: Arc<Semaphore>,
    limits: Vec<ConnLimits>,
    publisher: Publisher,
    retry_stage: RetryStage,
    lanes: LaneMap,
    shutdown: CancellationToken,
}

/// Why the dispatcher cannot start.
pub type DispatchError = crate::net::ClientError;

impl Dispatcher {
    /// Builds the HTTP clients and limits of every connection.
    pub fn new(
        config: Arc<Config>,
        publisher: Publisher,
        retry_stage: RetryStage,
        shutdown: CancellationToken,
    ) -> Result<Arc<Dispatcher>, DispatchError> {
        let policy = Policy { allow_private: config.delivery.allow_private_networks };
        let clients = Clients::build(&config.connections, policy)?;
        let concurrency = config.delivery.concurrency;
        // Without an explicit cap a connection may take half the global slots, so a stalled
        // endpoint always leaves the other half to everyone else.
        let default_cap = (concurrency / 2).max(1);
        let limits = config
            .connections
            .iter()
            .map(|c| ConnLimits {
                in_flight: Arc::new(Semaphore::new(c.max_in_flight.unwrap_or(default_cap))),
                rate: c.rate_limit.as_ref().map(|rl| {
                    let period = Duration::from_secs_f64(1.0 / rl.per_second);
                    let burst = NonZeroU32::new(rl.burst).unwrap_or(NonZeroU32::MIN);
                    RateLimiter::direct(Quota::with_period(period).expect("positive period").allow_burst(burst))
                }),
            })
            .collect();
        Ok(Arc::new(Dispatcher {
            global: Arc::new(Semaphore::new(concurrency)),
            config,
            clients,
            policy,
            limits,
            publisher,
            retry_stage,
            lanes: LaneMap { lanes: Mutex::new(HashMap::new()), parked: Mutex::new(ParkedLanes::default()) },
            shutdown,
        }))
    }

    /// Queues a job behind earlier jobs of the same object and action.
    pub fn submit(self: &Arc<Self>, job: Job) {
        let key = (job.inflight.event.object_key(), job.matched.action);
        let mut lanes = self.lanes.lanes.lock().unwrap_or_else(|p| p.into_inner());
        let job = match lanes.get(&key) {
            Some(tx) => match tx.send(job) {
                Ok(()) => return,
                Err(mpsc::error::SendError(job)) => job,
            },
            None => job,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        tx.send(job).expect("receiver is alive");
        lanes.insert(key.clone(), tx);
        drop(lanes);
        let this = Arc::clone(self);
        tokio::spawn(async move { this.run_lane(key, rx).await });
    }

    async fn run_lane(self: Arc<Self>, key: (String, usize), mut rx: mpsc::UnboundedReceiver<Job>) {
        loop {
            while let Ok(job) = rx.try_recv() {
                self.process(job).await;
            }
            // Jobs are sent under this lock, so an empty queue seen under it stays empty.
            let mut lanes = self.lanes.lanes.lock().unwrap_or_else(|p| p.into_inner());
            if rx.is_empty() {
                lanes.remove(&key);
                return;
            }
        }
    }

    /// Delivers one job to its final outcome and publishes it, then completes the event.
    pub async fn process(&self, job: Job) {
        let Some(report) = self.deliver(&job).await else {
            // Shut down mid-delivery: the outcome is not final, so the position stays.
            return;
        };
        if report.status != Outcome::RetryScheduled {
            self.unpark(&job);
        }
        self.publish_report(&job, &report).await;
        job.inflight.complete(report.completion);
    }

    /// Runs the attempts of one job; `None` when shut down before a final outcome.
    pub async fn deliver(&self, job: &Job) -> Option<Report> {
        let action = &self.config.actions[job.matched.action];
        let delivery = &self.config.delivery;
        let started = Instant::now();
        let since_first = |now: Instant| {
            let earlier = job
                .first_attempt_ms
                .map(|ms| Duration::from_millis((chrono::Utc::now().timestamp_millis() - ms).max(0) as u64))
                .unwrap_or_default();
            earlier + (now - started)
        };
        let report = |status, attempts, error: Option<(&str, String)>, answer, completion| Report {
            status,
            attempts,
            error: error.map(|(r, d)| (r.to_string(), d)),
            answer,
            duration: since_first(Instant::now()),
            completion,
        };
        if !job.missing.is_empty() {
            metrics::get().missing_placeholders.with_label_values(&[&action.name]).inc_by(job.missing.len() as u64);
        }
        let size = job.request.size();
        if size as u64 > delivery.max_request_bytes.0 {
            let detail = format!(
                "rendered request is {size} bytes, over delivery.max_request_bytes ({})",
                delivery.max_request_bytes.0
            );
            return Some(report(
                Outcome::Failed,
                job.attempts_before,
                Some(("too_large", detail)),
                None,
                Completion::Final,
            ));
        }
        if delivery.dry_run {
            return Some(report(Outcome::DryRun, 0, None, None, Completion::Final));
        }
        let url = match reqwest::Url::parse(&job.request.url) {
            Ok(u) => u,
            Err(e) => {
                let detail = format!("rendered URL is invalid: {e}");
                return Some(report(
                    Outcome::Failed,
                    job.attempts_before,
                    Some(("invalid_url", detail)),
                    None,
                    Completion::Final,
                ));
            }
        };
        if let Err(refused) = self.policy.check_url(&url) {
            metrics::get().attempts.with_label_values(&[&action.name, "refused"]).inc();
            return Some(report(
                Outcome::Failed,
                job.attempts_before,
                Some(("destination_refused", refused.to_string())),
                None,
                Completion::Final,
            ));
        }
        if let RetryStage::Handoff(stage) = &self.retry_stage {
            if let Some(delay) = self.park_turn(job) {
                return self.park_behind(job, stage.as_ref(), delay).await;
            }
        }
        let mut attempts = job.attempts_before;
        let quick_limit = job.attempts_before + delivery.quick_attempts;
        loop {
            attempts += 1;
            let outcome = tokio::select! {
                _ = self.shutdown.cancelled() => return None,
                o = self.attempt(job, &url) => o,
            };
            let (retry_after, failure, answer) = match outcome {
                AttemptOutcome::Answer(answer) => {
                    let status = answer.status;
                    if let Some(err) = answer_error(action.kind, status, &answer.body) {
                        // The service said no in its body (iTop code != 0, a Slack error code): final.
                        let retryable = status_is_retryable(status);
                        if !retryable {
                            return Some(report(
                                Outcome::Failed,
                                attempts,
                                Some((&err.reason, err.detail)),
                                Some(answer),
                                Completion::Final,
                            ));
                        }
                    }
                    if (200..300).contains(&status) {
                        return Some(report(Outcome::Delivered, attempts, None, Some(answer), Completion::Final));
                    }
                    if !status_is_retryable(status) {
                        let detail = format!("HTTP {status}: {}", excerpt(&answer.body));
                        return Some(report(
                            Outcome::Failed,
                            attempts,
                            Some((&format!("http_{status}"), detail)),
                            Some(answer),
                            Completion::Final,
                        ));
                    }
                    let retry_after = header(&answer.headers, "retry-after")
                        .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
                    (
                        retry_after,
                        (format!("http_{status}"), format!("HTTP {status}: {}", excerpt(&answer.body))),
                        Some(answer),
                    )
                }
                AttemptOutcome::Timeout => {
                    (None, ("timeout".to_string(), "no answer within the timeout".to_string()), None)
                }
                AttemptOutcome::Network(detail) => (None, ("network".to_string(), detail), None),
                AttemptOutcome::Refused(detail) => {
                    return Some(report(
                        Outcome::Failed,
                        attempts,
                        Some(("destination_refused", detail)),
                        None,
                        Completion::Final,
                    ));
                }
            };
            let Some(delay) = next_delay(&delivery.retry, attempts, retry_after, rand::random::<f64>()) else {
                let (reason, detail) = failure;
                let detail = format!("{detail} (after {attempts} attempts)");
                return Some(report(Outcome::Failed, attempts, Some((&reason, detail)), answer, Completion::Final));
            };
            if attempts >= quick_limit {
                match &self.retry_stage {
                    RetryStage::InProcess => {}
                    RetryStage::Handoff(stage) => {
                        let info = self.retry_info(job, attempts, started);
                        if let Some(msg) = message_copy(job) {
                            match stage.schedule(&msg, info, delay).await {
                                Ok(()) => {
                                    metrics::get()
                                        .retries_scheduled
                                        .with_label_values(&[&action.name, "durable"])
                                        .inc();
                                    // Later deliveries of this lane now wait behind this one.
                                    self.parked_head(
                                        job,
                                        chrono::Utc::now().timestamp_millis() + delay.as_millis() as i64,
                                    );
                                    return Some(report(
                                        Outcome::RetryScheduled,
                                        attempts,
                                        Some((&failure.0, failure.1)),
                                        answer,
                                        Completion::Final,
                                    ));
                                }
                                Err(e) => {
                                    tracing::warn!(action = %action.name, error = %e, "durable retry stage refused; retrying in process");
                                }
                            }
                        }
                    }
                    RetryStage::Redeliver => {
                        metrics::get().retries_scheduled.with_label_values(&[&action.name, "durable"]).inc();
                        return Some(report(
                            Outcome::RetryScheduled,
                            attempts,
                            Some((&failure.0, failure.1)),
                            answer,
                            Completion::Redeliver(delay),
                        ));
                    }
                }
            }
            metrics::get().retries_scheduled.with_label_values(&[&action.name, "in_process"]).inc();
            tracing::debug!(action = %action.name, attempts, delay_ms = delay.as_millis() as u64, reason = %failure.0, "retrying");
            tokio::select! {
                _ = self.shutdown.cancelled() => return None,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    fn retry_info(&self, job: &Job, attempts: u32, started: Instant) -> RetryInfo {
        let first = job
            .first_attempt_ms
            .unwrap_or_else(|| chrono::Utc::now().timestamp_millis() - started.elapsed().as_millis() as i64);
        RetryInfo {
            trigger: self.config.triggers[job.matched.trigger].name.clone(),
            action: self.config.actions[job.matched.action].name.clone(),
            mention: job.matched.mention,
            attempts,
            first_attempt_ms: first,
        }
    }

    /// When `job`'s lane has deliveries parked in the retry stage and `job` is not the
    /// oldest of them coming back: how long it should wait in the stage behind them.
    fn park_turn(&self, job: &Job) -> Option<Duration> {
        let key = (job.inflight.event.object_key(), job.matched.action);
        let id = ParkId::of(job);
        let now = chrono::Utc::now().timestamp_millis();
        let mut parked = self.lanes.parked.lock().unwrap_or_else(|p| p.into_inner());
        parked.sweep(now);
        let queue = parked.lanes.get_mut(&key)?;
        let (head, head_due) = match queue.front() {
            Some((head, due)) if now <= due + PARK_STALE_MS => (head.clone(), *due),
            _ => {
                if !queue.is_empty() {
                    tracing::warn!(action = %self.config.actions[job.matched.action].name, "a parked delivery did not come back in time; its lane is released");
                }
                parked.lanes.remove(&key);
                return None;
            }
        };
        // Coming back from the stage (it carries its first attempt time) and oldest: its turn.
        let coming_back = job.first_attempt_ms.is_some();
        if coming_back && head == id {
            return None;
        }
        if coming_back {
            // Parked again below, at the back.
            queue.retain(|(x, _)| x != &id);
        }
        let until_head = Duration::from_millis((head_due - now).max(0) as u64);
        Some(until_head.max(self.config.delivery.retry.initial.0))
    }

    /// Hands `job` to the retry stage behind the parked deliveries of its lane, without
    /// attempting it. Until the stage takes it, the lane waits: attempting it instead would
    /// let it overtake them.
    async fn park_behind(&self, job: &Job, stage: &dyn DurableRetry, delay: Duration) -> Option<Report> {
        let action = &self.config.actions[job.matched.action];
        let now = chrono::Utc::now().timestamp_millis();
        let info = RetryInfo {
            trigger: self.config.triggers[job.matched.trigger].name.clone(),
            action: action.name.clone(),
            mention: job.matched.mention,
            attempts: job.attempts_before,
            first_attempt_ms: job.first_attempt_ms.unwrap_or(now),
        };
        let mut backoff = Duration::from_millis(200);
        loop {
            let result = match message_copy(job) {
                Some(msg) => stage.schedule(&msg, info.clone(), delay).await,
                None => Err("the message is no longer available".to_string()),
            };
            match result {
                Ok(()) => {
                    metrics::get().retries_scheduled.with_label_values(&[&action.name, "durable"]).inc();
                    let due = chrono::Utc::now().timestamp_millis() + delay.as_millis() as i64;
                    let key = (job.inflight.event.object_key(), job.matched.action);
                    let mut parked = self.lanes.parked.lock().unwrap_or_else(|p| p.into_inner());
                    parked.lanes.entry(key).or_default().push_back((ParkId::of(job), due));
                    return Some(Report {
                        status: Outcome::RetryScheduled,
                        attempts: job.attempts_before,
                        error: Some((
                            "parked".into(),
                            "waiting behind an earlier delivery of the same object and action".into(),
                        )),
                        answer: None,
                        duration: Duration::ZERO,
                        completion: Completion::Final,
                    });
                }
                Err(e) => {
                    tracing::warn!(action = %action.name, error = %e, "parking a delivery behind an earlier one failed; trying again");
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return None,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// Records that `job` was handed to the retry stage after its attempts: it is (or
    /// stays) the oldest parked delivery of its lane.
    fn parked_head(&self, job: &Job, due_ms: i64) {
        let key = (job.inflight.event.object_key(), job.matched.action);
        let id = ParkId::of(job);
        let mut parked = self.lanes.parked.lock().unwrap_or_else(|p| p.into_inner());
        let queue = parked.lanes.entry(key).or_default();
        match queue.front_mut() {
            Some((head, due)) if *head == id => *due = due_ms,
            _ => queue.push_front((id, due_ms)),
        }
    }

    /// `job` reached a final outcome: when it was the oldest parked delivery of its lane,
    /// the next one may go.
    fn unpark(&self, job: &Job) {
        let key = (job.inflight.event.object_key(), job.matched.action);
        let mut parked = self.lanes.parked.lock().unwrap_or_else(|p| p.into_inner());
        let Some(queue) = parked.lanes.get_mut(&key) else {
            return;
        };
        if queue.front().is_some_and(|(head, _)| *head == ParkId::of(job)) {
            queue.pop_front();
        }
        if queue.is_empty() {
            parked.lanes.remove(&key);
        }
    }

    async fn attempt(&self, job: &Job, url: &reqwest::Url) -> AttemptOutcome {
        let action = &self.config.actions[job.matched.action];
        let conn = &self.config.connections[job.connection];
        let limits = &self.limits[job.connection];
        // The connection's own slot first: waiting on a stalled endpoint must not hold a
        // global slot that other endpoints could use.
        let Ok(_conn_permit) = limits.in_flight.acquire().await else {
            return AttemptOutcome::Network("dispatcher closed".into());
        };
        if let Some(rate) = &limits.rate {
            rate.until_ready().await;
        }
        let Ok(_permit) = self.global.acquire().await else {
            return AttemptOutcome::Network("dispatcher closed".into());
        };
        let mut request = job.request.clone();
        request.stamp(&conn.signing_keys, chrono::Utc::now().timestamp());
        let method = reqwest::Method::from_bytes(request.method.as_bytes()).unwrap_or(reqwest::Method::POST);
        let timeout = conn.timeout.unwrap_or(self.config.delivery.timeout.0);
        let mut builder = self.clients.get(job.connection).request(method, url.clone()).timeout(timeout);
        for (k, v) in &request.headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        if !request.body.is_empty() {
            builder = builder.body(request.body);
        }
        metrics::get().in_flight.inc();
        let result = async {
            let resp = builder.send().await?;
            let status = resp.status().as_u16();
            let headers = resp
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                .collect();
            let body = read_limited(resp, MAX_ANSWER_BYTES).await?;
            Ok::<_, reqwest::Error>(Answer { status, headers, body })
        }
        .await;
        metrics::get().in_flight.dec();
        let outcome = match result {
            Ok(answer) => AttemptOutcome::Answer(answer),
            Err(e) if e.is_timeout() => AttemptOutcome::Timeout,
            Err(e) => match refused_in(&e) {
                Some(r) => AttemptOutcome::Refused(r.to_string()),
                None => AttemptOutcome::Network(error_chain(&e)),
            },
        };
        let class = match &outcome {
            AttemptOutcome::Answer(a) => match a.status {
                200..=299 => "2xx",
                300..=399 => "3xx",
                400..=499 => "4xx",
                _ => "5xx",
            },
            AttemptOutcome::Timeout => "timeout",
            AttemptOutcome::Network(_) => "network",
            AttemptOutcome::Refused(_) => "refused",
        };
        metrics::get().attempts.with_label_values(&[&action.name, class]).inc();
        outcome
    }

    /// The result message of a report.
    pub fn result_message(&self, job: &Job, report: &Report) -> Value {
        let action = &self.config.actions[job.matched.action];
        let trigger = &self.config.triggers[job.matched.trigger];
        let mut m = Map::new();
        m.insert("kind".into(), json!("delivery"));
        m.insert("event_id".into(), json!(job.inflight.event.id));
        m.insert("object".into(), json!(job.inflight.event.object_key()));
        m.insert("trigger".into(), json!(trigger.name));
        m.insert("action".into(), json!(action.name));
        m.insert("status".into(), json!(report.status.as_str()));
        m.insert("attempts".into(), json!(report.attempts));
        m.insert("http_status".into(), json!(report.answer.as_ref().map(|a| a.status)));
        m.insert("duration_ms".into(), json!(report.duration.as_millis() as u64));
        let mut request = json!({"method": job.request.method, "url": job.request.masked_url()});
        if report.status == Outcome::DryRun {
            let shown = job.request.shown();
            request["headers"] = Value::Object(shown.headers);
            request["body"] = json!(shown.body);
        }
        m.insert("request".into(), request);
        m.insert("response_excerpt".into(), json!(report.answer.as_ref().map(|a| excerpt(&a.body))));
        m.insert("error".into(), report.error.as_ref().map_or(Value::Null, |(r, d)| json!({"reason": r, "detail": d})));
        m.insert("webhook_id".into(), json!(job.request.header("webhook-id")));
        if job.matched.mention.is_some() {
            m.insert("mention".into(), json!(job.matched.mention));
        }
        if !job.missing.is_empty() {
            m.insert("missing_placeholders".into(), json!(job.missing));
        }
        m.insert("time".into(), json!(now_rfc3339()));
        Value::Object(m)
    }

    async fn publish_report(&self, job: &Job, report: &Report) {
        let action = &self.config.actions[job.matched.action];
        let trigger = &self.config.triggers[job.matched.trigger];
        let key = job.inflight.event.object_key();
        let m = metrics::get();
        // A delivery parked in the retry stage is not over: its result comes when it is.
        if report.status != Outcome::RetryScheduled {
            m.deliveries.with_label_values(&[&action.name, action.kind.as_str(), report.status.as_str()]).inc();
            m.delivery_duration.with_label_values(&[&action.name]).observe(report.duration.as_secs_f64());
            self.publisher.response(&key, &self.result_message(job, report)).await;
        }
        if let (Some(cb), Some(answer)) = (&action.callback, &report.answer) {
            let ok = report.status == Outcome::Delivered;
            if ok || (cb.when == CallbackWhen::AnyResponse && report.status != Outcome::RetryScheduled) {
                if let Some(update) = self.callback_update(job, cb, answer) {
                    m.callback_updates.with_label_values(&[&action.name]).inc();
                    self.publisher.response(&key, &update).await;
                }
            }
        }
        if report.status == Outcome::Failed {
            let (reason, detail) = report.error.clone().unwrap_or_default();
            self.publisher
                .dead_letter(
                    &key,
                    DeadLetter {
                        reason: &reason,
                        detail: &detail,
                        source: &job.inflight.coords,
                        raw: &job.inflight.raw,
                        event_id: Some(&job.inflight.event.id),
                        action: Some(&action.name),
                        trigger: Some(&trigger.name),
                    },
                )
                .await;
        }
    }

    /// Evaluates a callback mapping over an answer.
    pub fn callback_update(&self, job: &Job, cb: &Callback, answer: &Answer) -> Option<Value> {
        let action = &self.config.actions[job.matched.action];
        let event = &job.inflight.event;
        let body = serde_json::from_slice::<Value>(&answer.body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&answer.body).into_owned()));
        let headers: Map<String, Value> = answer.headers.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        let response = json!({"status": answer.status, "headers": headers, "body": body});
        let object = Value::Object(event.object.clone());
        let previous = Value::Object(event.previous.clone());
        let mut fields = Map::new();
        for (code, expr) in &cb.fields {
            match expr.eval(&[
                ("response", &response),
                ("event", &event.document),
                ("object", &object),
                ("previous", &previous),
            ]) {
                Ok(v) => {
                    fields.insert(code.clone(), v);
                }
                Err(e) => {
                    metrics::get().callback_errors.with_label_values(&[&action.name]).inc();
                    tracing::warn!(action = %action.name, field = %code, error = %e, "callback field failed to evaluate");
                }
            }
        }
        if fields.is_empty() {
            return None;
        }
        Some(json!({
            "kind": "object_update",
            "event_id": event.id,
            "trigger": self.config.triggers[job.matched.trigger].name,
            "action": action.name,
            "class": event.class,
            "key": event.key,
            "fields": fields,
            "time": now_rfc3339(),
        }))
    }
}

enum AttemptOutcome {
    Answer(Answer),
    Timeout,
    Network(String),
    Refused(String),
}

/// A copy of the job's message for the retry stage, without its acknowledgement (which
/// stays with the event). A copy, so that jobs of one event handed off at the same time by
/// different lanes do not take the message from each other.
fn message_copy(job: &Job) -> Option<Message> {
    let guard = job.inflight.message.lock().unwrap_or_else(|p| p.into_inner());
    let m = guard.as_ref()?;
    Some(Message {
        payload: m.payload.clone(),
        headers: m.headers.clone(),
        coords: m.coords.clone(),
        ack: Ack::none(),
        retry: m.retry.clone(),
    })
}

async fn read_limited(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        let room = limit.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= limit {
            break;
        }
    }
    Ok(body)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// The first characters of an answer, for results and logs.
pub fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text.chars().take(EXCERPT_CHARS).collect();
    if text.chars().count() > EXCERPT_CHARS {
        out.push('…');
    }
    out
}

/// An error and its causes on one line, with any URL masked.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = s.source();
    }
    let joined = parts.join(": ");
    // reqwest puts the URL in its message: mask it like every other shown URL.
    match joined.find("(http") {
        Some(start) => {
            let end = joined[start..].find(')').map(|e| start + e).unwrap_or(joined.len());
            format!(
                "{}({}){}",
                &joined[..start],
                crate::mask::url(&joined[start + 1..end]),
                &joined[(end + 1).min(joined.len())..]
            )
        }
        None => joined,
    }
}
