//! Delivery: each (trigger, action) job of an event is sent in its lane (object + action,
//! in event order), within the global and per-connection limits, retried with backoff and
//! `Retry-After`, handed to the durable retry stage when its quick attempts are used up, and
//! ends with exactly one result (and a dead letter when it failed for good).
//!
//! - [`inflight`]: the message's data shared by its jobs, and the ack that waits for them.
//! - [`lanes`]: the order of a lane's deliveries across long retries (pure, time passed in).
//! - [`verdict`]: what an attempt means (pure): delivered, failed, retry now, long retry.
//! - [`attempt`]: one HTTP attempt within the limits.
//! - [`report`]: what a finished delivery publishes: its result, callback update, dead letter.
//! - this file: the lane tasks that tie them together, and the outcome of every job.

mod attempt;
mod inflight;
mod lanes;
mod report;
mod verdict;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use attempt::Answer;
pub use inflight::InFlight;
pub use lanes::{Arrival, DeliveryId, LaneKey, Next, Parking, Seq};
pub use verdict::{verdict, Attempted, DeliveryError, Policy as RetryPolicy, Verdict};

use crate::config::Config;
use crate::metrics::{self, AttemptClass, RetryWait};
use crate::net::{Clients, Endpoint, Policy};
use crate::publish::Publisher;
use crate::request::Request;
use crate::source::{Coords, DurableRetry, RetryInfo, RetryStage};
use crate::trigger::Match;

/// How many events may be read ahead of their final outcomes, at most: the bound of the
/// pipeline's read-ahead and of what a source holds. Twice the concurrency keeps every
/// request slot busy (an event makes one delivery or more) while the next events are
/// parsed and rendered; four times only added memory (peak RSS at concurrency 256: about
/// 120 MiB against 76, same throughput, BENCHMARKS.md).
pub fn max_pending(config: &Config) -> usize {
    (config.delivery.concurrency * 2).clamp(64, 16_384)
}

/// How long after its due time a lane's first parked delivery may take to come back before
/// the lane is released (see [`lanes`]).
const PARK_STALE_MS: i64 = 10 * 60 * 1000;
/// How many deliveries lane parking keeps by reference only, at most (see [`lanes`]).
const MAX_SPILLED: usize = 65_536;
/// How often parked lanes are checked for deliveries that never came back.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

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
    /// Why the rendered request must not be sent, if it must not.
    pub invalid: Vec<String>,
    /// Requests already sent for this delivery (in earlier runs, before a long retry).
    pub attempts_before: u32,
    /// When the first attempt started (unix ms), if one did.
    pub first_attempt_ms: Option<i64>,
    /// Whether it comes back from the durable retry stage.
    pub returning: bool,
}

impl Job {
    fn lane(&self) -> LaneKey {
        (self.inflight.event.object_key(), self.matched.action)
    }

    fn trace_id(&self) -> &str {
        self.inflight.event.trace.as_ref().map_or("", |t| t.trace_id())
    }

    fn id(&self) -> DeliveryId {
        DeliveryId { seq: self.inflight.seq, trigger: self.matched.trigger, mention: self.matched.mention }
    }
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

/// The word on one delivery after this run's attempts.
#[derive(Debug, Clone)]
pub struct Report {
    /// How the delivery ended.
    pub status: Outcome,
    /// Requests sent for this delivery, in all.
    pub attempts: u32,
    /// Why it is not delivered.
    pub error: Option<DeliveryError>,
    /// Whether the attempts ran out.
    pub exhausted: bool,
    /// The last HTTP answer.
    pub answer: Option<Answer>,
    /// From the first attempt to now.
    pub duration: Duration,
    /// For `RetryScheduled`: when it is due back (unix ms).
    pub due_ms: i64,
}

/// Why the dispatcher cannot start.
pub type DispatchError = crate::net::ClientError;

/// Sends requests and reports outcomes.
pub struct Dispatcher {
    config: Arc<Config>,
    sender: attempt::Sender,
    policy: Policy,
    publisher: Publisher,
    stage: Option<Arc<dyn DurableRetry>>,
    lanes: Mutex<HashMap<LaneKey, mpsc::UnboundedSender<Job>>>,
    parking: Mutex<Parking<Job, Coords>>,
    masked_urls: Mutex<HashMap<(String, bool), Arc<str>>>,
    shutdown: CancellationToken,
}

impl Dispatcher {
    /// Builds the HTTP clients and limits of every connection; with a durable stage, also
    /// the sweep of parked lanes.
    pub fn new(
        config: Arc<Config>,
        publisher: Publisher,
        retry_stage: RetryStage,
        shutdown: CancellationToken,
    ) -> Result<Arc<Dispatcher>, DispatchError> {
        let policy = Policy { allow_private: config.delivery.allow_private_networks };
        let clients = Clients::build(
            config.connections.iter().map(|c| Endpoint {
                name: &c.name,
                tls: &c.tls,
                proxy: c.proxy.as_ref(),
                policy: c.policy(policy),
            }),
            config.delivery.concurrency,
        )?;
        let stage = match retry_stage {
            RetryStage::Handoff(stage) => Some(stage),
            RetryStage::InProcess => None,
        };
        // Held deliveries give their read-ahead room back (`InFlight::hold`), so this bounds
        // only their memory (a rendered request and its event each, a few KiB). Past it, a
        // stage that can read a record again keeps the delivery and parking its reference
        // (a few hundred bytes at most); past that too, the delivery is written to the stage
        // again every time the one it waits for fails once more, which multiplies the
        // retry records when a failing endpoint has many objects.
        let max_held = (max_pending(&config) * 16).clamp(2_048, 16_384);
        let dispatcher = Arc::new(Dispatcher {
            sender: attempt::Sender::new(&config, clients),
            config,
            policy,
            publisher,
            stage,
            lanes: Mutex::new(HashMap::new()),
            parking: Mutex::new(Parking::new(max_held, MAX_SPILLED, PARK_STALE_MS)),
            masked_urls: Mutex::new(HashMap::new()),
            shutdown,
        });
        if dispatcher.stage.is_some() {
            tokio::spawn(sweep(Arc::downgrade(&dispatcher)));
        }
        Ok(dispatcher)
    }

    /// Queues a job behind earlier jobs of the same object and action.
    pub fn submit(self: &Arc<Self>, job: Job) {
        let key = job.lane();
        let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
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

    async fn run_lane(self: Arc<Self>, key: LaneKey, mut rx: mpsc::UnboundedReceiver<Job>) {
        loop {
            while let Ok(job) = rx.try_recv() {
                self.process(job).await;
            }
            // Jobs are sent under this lock, so an empty queue seen under it stays empty.
            let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
            if rx.is_empty() {
                lanes.remove(&key);
                return;
            }
        }
    }

    fn parking(&self) -> std::sync::MutexGuard<'_, Parking<Job, Coords>> {
        self.parking.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Parks the lanes of the deliveries the stage found waiting when this replica took
    /// their partitions. The source finds them before it reads those partitions, so this runs
    /// before any newer delivery of theirs arrives here. A delivery whose trigger or action
    /// the config no longer has parks nothing (it is dead-lettered when it comes back).
    fn park_found(&self, stage: &dyn DurableRetry, parking: &mut Parking<Job, Coords>) {
        for found in stage.take_found() {
            let trigger = self.config.triggers.iter().position(|t| t.name == found.trigger);
            let action = self.config.actions.iter().position(|a| a.name == found.action);
            if let (Some(trigger), Some(action)) = (trigger, action) {
                let id = DeliveryId { seq: Seq(found.order.0, found.order.1), trigger, mention: found.mention };
                parking.parked(&(found.object, action), id, found.due_ms);
            }
        }
    }

    /// Takes one job to its outcome for this run (and the lane's held jobs that it frees).
    async fn process(&self, job: Job) {
        let arrival = match &self.stage {
            None => Arrival::Go(job),
            Some(stage) => {
                let (key, id, now) = (job.lane(), job.id(), now_ms());
                let inflight = Arc::clone(&job.inflight);
                let mut parking = self.parking();
                self.park_found(stage.as_ref(), &mut parking);
                let arrival = if job.returning {
                    let coords = &job.inflight.coords;
                    let reference = stage.can_fetch_again(coords).then(|| coords.clone());
                    parking.arrive_returning(&key, id, job, reference, now)
                } else {
                    parking.arrive_new(&key, id, job, now)
                };
                drop(parking);
                if matches!(arrival, Arrival::Held) {
                    inflight.hold();
                }
                arrival
            }
        };
        match arrival {
            Arrival::Held => {}
            // The stage keeps its record; parking keeps where it is.
            Arrival::Spilled(job) => job.inflight.let_go(),
            Arrival::ParkBehind { job, due_ms } => self.park_behind(job, due_ms).await,
            Arrival::Go(job) => self.run(job).await,
        }
    }

    /// Delivers `job`, publishes its outcome, completes its event; then the lane's next held
    /// job, if this one freed it.
    async fn run(&self, mut job: Job) {
        loop {
            let Some(report) = self.deliver(&job).await else {
                // Shut down mid-delivery: the outcome is not final, so the position stays.
                return;
            };
            let next = match (&self.stage, report.status) {
                (None, _) => None,
                (Some(_), Outcome::RetryScheduled) => {
                    self.parking().parked(&job.lane(), job.id(), report.due_ms);
                    None
                }
                (Some(_), _) => self.parking().finished(&job.lane(), job.id(), now_ms()),
            };
            if self.publish_report(&job, &report).await.is_err() {
                return;
            }
            job.inflight.complete();
            match next {
                Some(Next::Go(n)) => job = n,
                Some(Next::Fetch(run)) => return self.fetch_again(&run),
                None => return,
            }
        }
    }

    /// Hands `job` to the retry stage behind the parked deliveries of its lane, without
    /// attempting it. Until the stage takes it the lane waits: attempting it instead would
    /// let it overtake them. A stage that keeps refusing (a partition without a retry
    /// partition) leaves the job to be attempted now, out of order rather than stuck.
    async fn park_behind(&self, job: Job, due_ms: i64) {
        let Some(stage) = self.stage.clone() else {
            return self.run(job).await;
        };
        let action = &self.config.actions[job.matched.action];
        let delay = Duration::from_millis((due_ms - now_ms()).max(0) as u64);
        let mut pause = Duration::from_millis(200);
        for _ in 0..5 {
            let info = self.retry_info(&job, job.attempts_before, job.first_attempt_ms.unwrap_or_else(now_ms));
            match stage.schedule(&job.inflight.message_copy(), info, delay).await {
                Ok(()) => {
                    metrics::get()
                        .retries_scheduled
                        .with_label_values(&[&action.name, RetryWait::Parked.as_str()])
                        .inc();
                    self.parking().parked(&job.lane(), job.id(), due_ms);
                    job.inflight.complete();
                    return;
                }
                Err(e) => {
                    tracing::warn!(action = %action.name, error = %e, "parking a delivery behind an earlier one failed; trying again");
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return,
                        _ = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
        tracing::warn!(action = %action.name, "the retry stage keeps refusing; attempting the delivery now, out of its lane's order");
        self.run(job).await
    }

    /// Has the stage read spilled deliveries again: they come back as returning messages.
    fn fetch_again(&self, run: &[Coords]) {
        if let Some(stage) = &self.stage {
            for coords in run {
                stage.fetch_again(coords);
            }
        }
    }

    fn retry_info(&self, job: &Job, attempts: u32, first_attempt_ms: i64) -> RetryInfo {
        RetryInfo {
            trigger: self.config.triggers[job.matched.trigger].name.clone(),
            action: self.config.actions[job.matched.action].name.clone(),
            mention: job.matched.mention,
            attempts,
            first_attempt_ms,
        }
    }

    /// Runs this run's attempts of one job; `None` when shut down before an outcome.
    pub async fn deliver(&self, job: &Job) -> Option<Report> {
        let action = &self.config.actions[job.matched.action];
        let delivery = &self.config.delivery;
        let started = Instant::now();
        let first_ms = job.first_attempt_ms.unwrap_or_else(now_ms);
        let report = |status, attempts, error: Option<DeliveryError>, exhausted, answer, due_ms| Report {
            status,
            attempts,
            error,
            exhausted,
            answer,
            duration: Duration::from_millis((now_ms() - first_ms).max(0) as u64).max(started.elapsed()),
            due_ms,
        };
        let failed =
            |error: DeliveryError| Some(report(Outcome::Failed, job.attempts_before, Some(error), false, None, 0));
        if !job.missing.is_empty() {
            metrics::get().missing_placeholders.with_label_values(&[&action.name]).inc_by(job.missing.len() as u64);
        }
        if !job.invalid.is_empty() {
            return failed(DeliveryError::InvalidRequest(job.invalid.join("; ")));
        }
        let size = job.request.size();
        if size as u64 > delivery.max_request_bytes {
            return failed(DeliveryError::TooLarge(format!(
                "rendered request is {size} bytes, over delivery.max_request_bytes ({})",
                delivery.max_request_bytes
            )));
        }
        if delivery.dry_run {
            return Some(report(Outcome::DryRun, 0, None, false, None, 0));
        }
        let url = match reqwest::Url::parse(&job.request.url) {
            Ok(u) => u,
            Err(e) => return failed(DeliveryError::InvalidRequest(format!("rendered URL is invalid: {e}"))),
        };
        if let Err(refused) = self.config.connections[job.connection].policy(self.policy).check_url(&url) {
            metrics::get().attempts.with_label_values(&[&action.name, AttemptClass::Refused.as_str()]).inc();
            return failed(DeliveryError::DestinationRefused(refused.to_string()));
        }
        let policy = RetryPolicy {
            retry: action.retry.as_ref().unwrap_or(&delivery.retry),
            quick_attempts: delivery.quick_attempts,
            durable: self.stage.is_some(),
        };
        let mut attempts = job.attempts_before;
        let mut in_this_run = 0;
        loop {
            attempts += 1;
            in_this_run += 1;
            let (attempted, answer) = tokio::select! {
                _ = self.shutdown.cancelled() => return None,
                a = self.sender.attempt(&self.config, job.matched.action, job.connection, &job.request, &url) => a,
            };
            let reason = match &attempted {
                Attempted::Error { error, .. } => Some(error.reason()),
                Attempted::Success => None,
            };
            match verdict(&policy, attempted.clone(), attempts, in_this_run, rand::random::<f64>()) {
                Verdict::Delivered => return Some(report(Outcome::Delivered, attempts, None, false, answer, 0)),
                Verdict::Failed { error, exhausted } => {
                    return Some(report(Outcome::Failed, attempts, Some(error), exhausted, answer, 0))
                }
                Verdict::LongRetry(delay) => {
                    let stage = self.stage.as_ref().expect("long retries only with a stage");
                    let info = self.retry_info(job, attempts, first_ms);
                    match stage.schedule(&job.inflight.message_copy(), info, delay).await {
                        Ok(()) => {
                            self.note_retry(job, attempts, RetryWait::Durable, delay, reason.as_deref());
                            let error = match attempted {
                                Attempted::Error { error, .. } => Some(error),
                                Attempted::Success => None,
                            };
                            let due = now_ms() + delay.as_millis() as i64;
                            return Some(report(Outcome::RetryScheduled, attempts, error, false, answer, due));
                        }
                        Err(e) => {
                            tracing::warn!(action = %action.name, error = %e, "the durable retry stage refused; retrying in process");
                        }
                    }
                    self.wait(job, attempts, delay, reason.as_deref()).await?;
                }
                Verdict::RetryAfter(delay) => self.wait(job, attempts, delay, reason.as_deref()).await?,
            }
        }
    }

    /// Waits in process before the next attempt; `None` when shut down meanwhile.
    async fn wait(&self, job: &Job, attempts: u32, delay: Duration, reason: Option<&str>) -> Option<()> {
        self.note_retry(job, attempts, RetryWait::InProcess, delay, reason);
        tokio::select! {
            _ = self.shutdown.cancelled() => None,
            _ = tokio::time::sleep(delay) => Some(()),
        }
    }

    /// Counts and logs a delivery that failed and waits `delay` for its next attempt in `wait`.
    fn note_retry(&self, job: &Job, attempts: u32, wait: RetryWait, delay: Duration, reason: Option<&str>) {
        let action = &self.config.actions[job.matched.action];
        metrics::get().retries_scheduled.with_label_values(&[&action.name, wait.as_str()]).inc();
        tracing::info!(
            action = %action.name,
            event_id = %job.inflight.event.id,
            webhook_id = job.request.header("webhook-id").unwrap_or(""),
            trace_id = job.trace_id(),
            attempts,
            stage = wait.as_str(),
            delay_ms = delay.as_millis() as u64,
            reason = reason.unwrap_or(""),
            "delivery failed; waiting for the next attempt"
        );
    }
}

/// Releases lanes whose parked deliveries never came back, until the dispatcher is gone.
async fn sweep(dispatcher: std::sync::Weak<Dispatcher>) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    loop {
        tick.tick().await;
        let Some(d) = dispatcher.upgrade() else {
            return;
        };
        if d.shutdown.is_cancelled() {
            return;
        }
        let ready = d.parking().sweep(now_ms());
        for (_, next) in ready {
            match next {
                Next::Go(job) => d.submit(job),
                Next::Fetch(run) => d.fetch_again(&run),
            }
        }
    }
}

/// Now, unix milliseconds.
fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
