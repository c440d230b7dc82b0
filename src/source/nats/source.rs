//! The JetStream source: a durable pull consumer on the user's stream and one on the retry
//! stream, each fetched in batches no larger than the room this replica has, every message
//! handed over with an [`Ack`] that the [`Keeper`] turns into a confirmed `+ACK` (or a
//! `-NAK` when given up); retry records not yet due go back with a delayed `-NAK`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::pull::{Batch, Config as PullConfig};
use async_nats::jetstream::consumer::{AckPolicy, Info as ConsumerInfo, PullConsumer};
use async_nats::jetstream::context::{ConsumerInfoErrorKind, GetStreamErrorKind};
use async_nats::jetstream::stream::Stream;
use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::Message as JsMessage;
use async_trait::async_trait;
use futures::{FutureExt as _, StreamExt as _};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::connect::{connect, error_chain, NatsClient};
use super::error::NatsError;
use super::keeper::{progress_interval, Keeper};
use super::retry::{self, NatsRetry};
use crate::config::raw::{default_nats_retry_stream, default_nats_retry_subject, NatsCredentials};
use crate::config::{Config, SourceConfig};
use crate::metrics;
use crate::source::{Ack, Coords, Message, RetryStage, Source, SourceError};

/// `ack_wait` of a consumer the bridge creates. Progress acks go out every third of it.
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);
/// Messages asked for in one pull request, at most.
const MAX_BATCH: usize = 256;
/// How long a pull request waits on the server for messages. Short, so that a request the
/// server forgot without the client seeing a reconnection is soon replaced.
const PULL_EXPIRES: Duration = Duration::from_secs(5);
/// How often the consumer's pending count is read for the lag metric.
const LAG_INTERVAL: Duration = Duration::from_secs(5);
/// How often readiness follows the connection state.
const READY_INTERVAL: Duration = Duration::from_secs(1);

/// The NATS source settings, taken from the config.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Server URL(s).
    pub url: String,
    /// The stream to consume (it must exist).
    pub stream: String,
    /// Subjects the consumer filters on; empty: whatever the consumer has, or all.
    pub subjects: Vec<String>,
    /// Durable consumer name shared by every replica.
    pub consumer: String,
    /// The stream holding retry records (created when missing).
    pub retry_stream: String,
    /// The subject retry records are published on.
    pub retry_subject: String,
    /// Authentication and TLS.
    pub credentials: NatsCredentials,
    /// Messages this replica holds at most (fetched and not settled), events and retry
    /// records together.
    pub max_hold: usize,
    /// How long to wait for held messages to settle after shutdown.
    pub drain: Duration,
}

impl Settings {
    /// The settings of a config whose source is NATS; the replica holds at most `max_hold`
    /// messages.
    pub fn from_config(config: &Config, max_hold: usize) -> Option<Settings> {
        let SourceConfig::Nats { url, stream, subjects, consumer, retry_stream, retry_subject, credentials } =
            &config.source
        else {
            return None;
        };
        Some(Settings {
            url: url.clone(),
            stream: stream.clone(),
            subjects: subjects.clone(),
            consumer: consumer.clone(),
            // Filled in when the config was compiled; the defaults again for a hand-built one.
            retry_stream: retry_stream.clone().unwrap_or_else(|| default_nats_retry_stream(stream)),
            retry_subject: retry_subject.clone().unwrap_or_else(|| default_nats_retry_subject(consumer)),
            credentials: credentials.clone(),
            max_hold,
            drain: config.delivery.shutdown_timeout.0,
        })
    }

    /// The durable consumer reading the retry stream, shared by the replicas.
    pub fn retry_consumer(&self) -> String {
        format!("{}-retry", self.consumer)
    }

    /// `max_ack_pending` of a consumer the bridge creates. It caps messages delivered and not
    /// acked across all replicas: a small cap would let a burst of slow deliveries stop the
    /// whole consumer.
    pub fn max_ack_pending(&self) -> i64 {
        (self.max_hold * 16).max(10_000) as i64
    }

    /// Retry records the fetch loop asks for at once, at most: a share of the room, so that
    /// a pull waiting on the retry consumer never keeps the room from the events, nor the
    /// other way round.
    fn retry_share(&self) -> usize {
        (self.max_hold / 4).clamp(1, 64)
    }

    /// Events the fetch loop asks for at once, at most: what the retry records leave.
    fn events_batch(&self) -> usize {
        MAX_BATCH.min(self.max_hold.saturating_sub(self.retry_share()).max(1))
    }

    /// The main consumer the bridge creates when none exists.
    fn consumer_spec(&self) -> ConsumerSpec {
        let mut config = PullConfig {
            durable_name: Some(self.consumer.clone()),
            description: Some("hookbridge: object-change events to webhooks".into()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: DEFAULT_ACK_WAIT,
            // Never let the server drop a message after N deliveries: the bridge counts
            // attempts itself and dead-letters when retries are exhausted.
            max_deliver: -1,
            max_ack_pending: self.max_ack_pending(),
            ..Default::default()
        };
        match self.subjects.as_slice() {
            [] => {}
            // One filter works on every server version; several need NATS 2.10.
            [one] => config.filter_subject = one.clone(),
            many => config.filter_subjects = many.to_vec(),
        }
        ConsumerSpec {
            stream: self.stream.clone(),
            name: self.consumer.clone(),
            subjects: self.subjects.clone(),
            config,
        }
    }

    /// The retry consumer the bridge creates when none exists.
    fn retry_spec(&self) -> ConsumerSpec {
        let config = PullConfig {
            durable_name: Some(self.retry_consumer()),
            description: Some("hookbridge: deliveries waiting for a retry".into()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: DEFAULT_ACK_WAIT,
            max_deliver: -1,
            // Records not yet due wait as NAKed with a delay, and those count as pending: any
            // cap would let a long outage of one endpoint hold back the records of the others.
            max_ack_pending: -1,
            filter_subject: self.retry_subject.clone(),
            ..Default::default()
        };
        ConsumerSpec {
            stream: self.retry_stream.clone(),
            name: self.retry_consumer(),
            subjects: vec![self.retry_subject.clone()],
            config,
        }
    }
}

/// A durable pull consumer the bridge binds, or creates with `config` when missing.
#[derive(Debug, Clone)]
struct ConsumerSpec {
    stream: String,
    name: String,
    /// The filter it must have; empty: any.
    subjects: Vec<String>,
    config: PullConfig,
}

/// What a fetch loop reads: events from the user's stream, or records from the retry stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Events,
    Retries,
}

/// One bound consumer and how to bind it again.
struct Pull {
    kind: Kind,
    stream: Stream,
    consumer: PullConsumer,
    spec: ConsumerSpec,
    /// Messages asked for in one pull request, at most.
    batch: usize,
}

/// The bound source.
pub struct NatsSource {
    settings: Settings,
    conn: NatsClient,
    events: Pull,
    retries: Pull,
    stage: Arc<NatsRetry>,
    ack_wait: Duration,
}

impl NatsSource {
    /// Connects, checks the stream exists, binds the durable consumer (creating it when
    /// missing), and makes sure the retry stream and its consumer exist.
    pub async fn open(settings: Settings) -> Result<NatsSource, NatsError> {
        let conn = connect(&settings.url, &settings.credentials, &format!("hookbridge/{}", settings.consumer)).await?;
        let stream = get_stream(&conn, &settings.stream).await?;
        let spec = settings.consumer_spec();
        let consumer = bind(&stream, &spec).await?;
        let ack_wait = effective_ack_wait(&consumer);
        tracing::info!(
            stream = %settings.stream,
            consumer = %settings.consumer,
            ack_wait_ms = ack_wait.as_millis() as u64,
            pending = consumer.cached_info().num_pending,
            "nats: consumer bound"
        );
        let events = Pull { kind: Kind::Events, stream, consumer, spec, batch: settings.events_batch() };
        let retry_stream = retry::ensure_stream(&conn, &settings.retry_stream, &settings.retry_subject).await?;
        let retry_spec = settings.retry_spec();
        let retry_consumer = bind(&retry_stream, &retry_spec).await?;
        tracing::info!(
            stream = %settings.retry_stream,
            subject = %settings.retry_subject,
            consumer = %retry_spec.name,
            waiting = retry_stream.cached_info().state.messages,
            "nats: retry stream bound"
        );
        // The keeper touches both kinds of messages: the shorter ack_wait sets the pace.
        let ack_wait = ack_wait.min(effective_ack_wait(&retry_consumer));
        let retries = Pull {
            kind: Kind::Retries,
            stream: retry_stream,
            consumer: retry_consumer,
            spec: retry_spec,
            batch: settings.retry_share(),
        };
        let stage = Arc::new(NatsRetry::new(&conn, &settings.retry_stream, &settings.retry_subject));
        Ok(NatsSource { settings, conn, events, retries, stage, ack_wait })
    }
}

fn effective_ack_wait(consumer: &PullConsumer) -> Duration {
    let ack_wait = consumer.cached_info().config.ack_wait;
    if ack_wait.is_zero() {
        DEFAULT_ACK_WAIT
    } else {
        ack_wait
    }
}

/// The JetStream coordinates of a fetched message; `None` (logged) without metadata.
fn metadata(msg: &JsMessage) -> Option<(String, u64, u64)> {
    match msg.info() {
        Ok(info) => Some((info.stream.to_string(), info.stream_sequence, info.delivered as u64)),
        Err(e) => {
            tracing::warn!(error = %e, subject = %msg.subject, "nats: message without JetStream metadata skipped");
            None
        }
    }
}

fn headers_of(msg: &JsMessage) -> Vec<(String, Vec<u8>)> {
    msg.headers
        .iter()
        .flat_map(|h| h.iter())
        .flat_map(|(name, values)| values.iter().map(move |v| (name.to_string(), v.as_str().as_bytes().to_vec())))
        .collect()
}

impl Feed<'_> {
    /// One message as the pipeline sees it; `None` if it is not to be handled now (no
    /// JetStream metadata, or a retry record that is not due yet).
    fn message(&self, kind: Kind, msg: JsMessage, room: Option<OwnedSemaphorePermit>) -> Option<Message> {
        match kind {
            Kind::Events => self.event(msg, room),
            Kind::Retries => self.retry_record(msg, room),
        }
    }

    fn event(&self, msg: JsMessage, room: Option<OwnedSemaphorePermit>) -> Option<Message> {
        let (stream, sequence, delivered) = metadata(&msg)?;
        let reply = msg.reply.clone()?;
        // A redelivery of the source message (after a crash or a lost ack) charges no attempts:
        // attempts are counted per action, in the retry records of the actions that failed.
        let held = self.keeper.hold(self.ids.fetch_add(1, Ordering::Relaxed), reply, room);
        Some(Message {
            coords: coords_of(&msg, stream, sequence, delivered),
            headers: headers_of(&msg),
            payload: msg.message.payload.to_vec(),
            // The ack is settled by the pipeline only once every outcome for this message is
            // final (delivered, failed and dead-lettered, or stored in the retry stream); the
            // keeper confirms it with the server. Dropping it unsettled NAKs it so another
            // replica can take it.
            ack: Ack::new(move |how| held.settle(how)),
            retry: None,
        })
    }

    /// A record of the retry stream: handed over when due, with the original message's
    /// headers and coordinates; NAKed with the remaining delay when not.
    fn retry_record(&self, msg: JsMessage, room: Option<OwnedSemaphorePermit>) -> Option<Message> {
        let (stream, sequence, delivered) = metadata(&msg)?;
        let reply = msg.reply.clone()?;
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        let payload = msg.message.payload.to_vec();
        let returned = match retry::decode(headers_of(&msg)) {
            Ok(r) => r,
            Err(reason) => {
                // Handed over as it is: the pipeline dead-letters it with the reason. Never run
                // as a new event (its other actions were delivered), never dropped in silence.
                tracing::warn!(%reason, stream = %stream, sequence, "nats: unreadable retry record");
                let held = self.keeper.hold(id, reply, room);
                return Some(Message {
                    coords: coords_of(&msg, stream.clone(), sequence, delivered),
                    headers: headers_of(&msg),
                    payload,
                    ack: Ack::new(move |how| held.settle(how)),
                    retry: Some(Err(reason)),
                });
            }
        };
        let wait_ms = returned.not_before_ms - chrono::Utc::now().timestamp_millis();
        tracing::debug!(
            sequence,
            delivered,
            id = msg.headers.as_ref().and_then(|h| h.get("Nats-Msg-Id")).map(|v| v.as_str()).unwrap_or(""),
            event_sequence = returned.origin.sequence,
            action = %returned.info.action,
            attempts = returned.info.attempts,
            wait_ms,
            "nats: retry record read"
        );
        if wait_ms > 0 {
            // Not due: JetStream holds it until then; it takes no room meanwhile.
            drop(room);
            self.keeper.hold(id, reply, None).postpone(Duration::from_millis(wait_ms as u64));
            return None;
        }
        let held = self.keeper.hold(id, reply, room);
        Some(Message {
            coords: returned.origin.coords(&stream, sequence),
            headers: returned.headers,
            payload,
            // Acked once this delivery is final, or once its next record is stored.
            ack: Ack::new(move |how| held.settle(how)),
            retry: Some(Ok(returned.info)),
        })
    }
}

/// A message's own coordinates in its stream.
fn coords_of(msg: &JsMessage, stream: String, sequence: u64, delivered: u64) -> Coords {
    Coords::Nats { stream, subject: msg.subject.to_string(), sequence, delivered: Some(delivered), retry: None }
}

/// The stream, which must exist.
async fn get_stream(conn: &NatsClient, name: &str) -> Result<Stream, NatsError> {
    match conn.jetstream.get_stream(name).await {
        Ok(s) => Ok(s),
        Err(e) => match e.kind() {
            GetStreamErrorKind::JetStream(js) if js.error_code() == ErrorCode::STREAM_NOT_FOUND => {
                Err(NatsError::StreamMissing { stream: name.to_string() })
            }
            _ => Err(NatsError::js("looking up the stream", error_chain(&e))),
        },
    }
}

/// Binds the durable consumer as it is, or creates it. An existing consumer is the
/// operator's (its `ack_wait`, `max_ack_pending`, backoff are respected) but must be a pull
/// consumer with explicit acks on the configured subjects.
async fn bind(stream: &Stream, spec: &ConsumerSpec) -> Result<PullConsumer, NatsError> {
    let existing = match stream.consumer_info(&spec.name).await {
        Ok(info) => Some(info),
        Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => None,
        Err(e) => return Err(NatsError::js("looking up the consumer", error_chain(&e))),
    };
    let Some(info) = existing else {
        let created = match stream.create_consumer(spec.config.clone()).await {
            Ok(consumer) => consumer,
            // Another replica may have created it a moment ago, with other settings.
            Err(create) => {
                let info = stream
                    .consumer_info(&spec.name)
                    .await
                    .map_err(|_| NatsError::js("creating the consumer", error_chain(&create)))?;
                check(&info, spec)?;
                return get_consumer(stream, spec).await;
            }
        };
        if let Err(e) = check(created.cached_info(), spec) {
            // A server older than 2.10 ignores several filter subjects and would have made a
            // consumer of the whole stream: do not leave it behind.
            let _ = stream.delete_consumer(&spec.name).await;
            return Err(e);
        }
        tracing::info!(stream = %spec.stream, consumer = %spec.name, "nats: durable consumer created");
        return Ok(created);
    };
    check(&info, spec)?;
    get_consumer(stream, spec).await
}

async fn get_consumer(stream: &Stream, spec: &ConsumerSpec) -> Result<PullConsumer, NatsError> {
    stream.get_consumer(&spec.name).await.map_err(|e| NatsError::js("binding the consumer", error_chain(e.as_ref())))
}

/// Whether a consumer can serve as the bridge's: pull, explicit acks, the configured filter.
fn check(info: &ConsumerInfo, spec: &ConsumerSpec) -> Result<(), NatsError> {
    let mismatch = |reason: String| NatsError::ConsumerMismatch {
        stream: spec.stream.clone(),
        consumer: spec.name.clone(),
        reason,
    };
    let c = &info.config;
    if c.deliver_subject.is_some() {
        return Err(mismatch("it is a push consumer; hookbridge needs a pull consumer".into()));
    }
    if c.ack_policy != AckPolicy::Explicit {
        return Err(mismatch(format!("its ack policy is {:?}; hookbridge needs explicit acks", c.ack_policy)));
    }
    let mut have: Vec<String> = c.filter_subjects.clone();
    if !c.filter_subject.is_empty() {
        have.push(c.filter_subject.clone());
    }
    have.sort();
    let mut want = spec.subjects.clone();
    want.sort();
    if !want.is_empty() && have != want {
        let hint = if want.len() > 1 { " (several subjects need NATS Server 2.10 or later)" } else { "" };
        return Err(mismatch(format!(
            "it filters {have:?} but the config says subjects {want:?}{hint}; delete the consumer or use another name"
        )));
    }
    if c.max_deliver > 0 {
        tracing::warn!(
            consumer = %spec.name,
            max_deliver = c.max_deliver,
            "nats: the consumer has max_deliver set: the server drops a message after that many deliveries, without a dead letter"
        );
    }
    Ok(())
}

#[async_trait]
impl Source for NatsSource {
    fn retry_stage(&self) -> RetryStage {
        RetryStage::Handoff(self.stage.clone())
    }

    /// A message (event or retry record) left unacknowledged or NAKed is offered again by
    /// JetStream: after the NAK's delay, or after `ack_wait`.
    fn redelivers_unsettled(&self) -> bool {
        true
    }

    async fn run(
        self: Box<Self>,
        tx: mpsc::Sender<Message>,
        ready: Arc<AtomicBool>,
        shutdown: CancellationToken,
    ) -> Result<(), SourceError> {
        let (keeper, keeper_task) =
            Keeper::start(self.conn.client.clone(), self.ack_wait, self.conn.connections.clone());
        tracing::debug!(progress_ms = progress_interval(self.ack_wait).as_millis() as u64, "nats: progress acks");
        ready.store(true, Ordering::SeqCst);
        let watcher = tokio::spawn(watch_health(
            self.conn.client.clone(),
            self.events.consumer.clone(),
            self.settings.stream.clone(),
            self.settings.consumer.clone(),
            ready.clone(),
        ));
        let NatsSource { settings, conn, events, retries, .. } = *self;
        let feed = Feed {
            tx: &tx,
            keeper: &keeper,
            // One permit per message held, returned when it settles. The pipeline reads ahead
            // at most max_pending events, so holding more would only age messages towards
            // their ack_wait. Retry records take their room from the same budget.
            room: Arc::new(Semaphore::new(settings.max_hold)),
            ids: AtomicU64::new(0),
            shutdown: &shutdown,
        };
        // Retry records are read from the start: they are one delivery each, and the lanes of
        // the dispatcher keep them in order; only events wait for orphaned messages.
        let events_loop = async {
            if wait_for_orphans(&events.consumer, &shutdown).await {
                events.fetch_loop(&conn, &feed).await;
            }
        };
        tokio::join!(events_loop, retries.fetch_loop(&conn, &feed));
        // Stop reading; what was fetched and not handed over is released by its guard.
        drop(feed);
        drop(keeper);
        drop(tx);
        // Wait for the held messages to settle and their acks to be confirmed: returning
        // earlier would let the process exit with acks unsent, and those messages would be
        // delivered again after ack_wait.
        if tokio::time::timeout(settings.drain + Duration::from_secs(5), keeper_task).await.is_err() {
            tracing::warn!("nats: messages still unsettled at the drain deadline; they will be delivered again");
        }
        watcher.abort();
        ready.store(false, Ordering::SeqCst);
        Ok(())
    }
}

/// Messages unacknowledged at start were delivered to a replica that may have crashed;
/// JetStream hands them out again only once their ack_wait expires, and prefers them to
/// new messages then. Pulling at once would deliver newer events of their objects first,
/// so the first pull waits one ack_wait. `false` when shut down meanwhile.
async fn wait_for_orphans(consumer: &PullConsumer, shutdown: &CancellationToken) -> bool {
    let unacked = match consumer.get_info().await {
        Ok(info) => info.num_ack_pending,
        Err(e) => {
            tracing::debug!(error = %e, "nats: consumer info failed");
            consumer.cached_info().num_ack_pending
        }
    };
    if unacked == 0 {
        return true;
    }
    let wait = effective_ack_wait(consumer) + Duration::from_millis(500);
    tracing::info!(
        unacked,
        wait_ms = wait.as_millis() as u64,
        "nats: messages are unacknowledged by another (or a crashed) replica; waiting for their redelivery before the first pull"
    );
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(wait) => true,
    }
}

impl Pull {
    /// Pulls batches until `shutdown`, recovering from every error: a pull request lost with
    /// a restarted server, a deleted consumer, a stream briefly unavailable.
    async fn fetch_loop(mut self, conn: &NatsClient, feed: &Feed<'_>) {
        let shutdown = feed.shutdown;
        let mut connections = conn.connections.clone();
        let mut pause = Duration::from_millis(100);
        loop {
            let Some(mut permits) = reserve(&feed.room, self.batch, shutdown).await else { return };
            connections.borrow_and_update();
            let batch = tokio::select! {
                _ = shutdown.cancelled() => return,
                b = self.consumer.batch().max_messages(permits.len()).expires(PULL_EXPIRES).messages() => b,
            };
            let mut batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(consumer = %self.spec.name, error = %error_chain(&e), "nats: pull request failed; retrying");
                    if !self.recover(&mut pause, shutdown).await {
                        return;
                    }
                    continue;
                }
            };
            let mut failed = false;
            let mut abandoned = false;
            loop {
                let next = tokio::select! {
                    _ = shutdown.cancelled() => {
                        // Hand back what already arrived rather than leave it to ack_wait.
                        for m in arrived(&mut batch) {
                            drop(feed.message(self.kind, m, None));
                        }
                        return;
                    }
                    next = batch.next() => next,
                    Ok(()) = connections.changed() => {
                        // The server may have restarted and forgotten this pull request.
                        // Take what already arrived, then ask again on the new connection.
                        tracing::debug!(consumer = %self.spec.name, "nats: reconnected; pulling again");
                        for m in arrived(&mut batch) {
                            if !feed.hand_over(self.kind, m, &mut permits).await {
                                return;
                            }
                        }
                        abandoned = true;
                        break;
                    }
                };
                match next {
                    None => break,
                    Some(Ok(m)) => {
                        pause = Duration::from_millis(100);
                        if !feed.hand_over(self.kind, m, &mut permits).await {
                            return;
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(consumer = %self.spec.name, error = %error_chain(e.as_ref()), "nats: pull failed; retrying");
                        failed = true;
                        break;
                    }
                }
            }
            drop(permits);
            if failed && !self.recover(&mut pause, shutdown).await {
                return;
            }
            // Messages the server sent on the abandoned pull and the old socket never brought
            // are delivered as far as the server knows: they come back only after ack_wait,
            // and JetStream hands expired messages out before new ones. Pulling at once would
            // deliver newer events of their objects first.
            if abandoned {
                let wait = effective_ack_wait(&self.consumer) + Duration::from_millis(500);
                tracing::info!(consumer = %self.spec.name, wait_ms = wait.as_millis() as u64, "nats: reconnected with a pull in flight; waiting for what it may have lost before pulling again");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }

    /// Waits a growing pause, then rebinds the consumer (it may have been deleted and must be
    /// created again). `false` when shut down meanwhile.
    async fn recover(&mut self, pause: &mut Duration, shutdown: &CancellationToken) -> bool {
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep(*pause) => {}
        }
        *pause = (*pause * 2).min(Duration::from_secs(5));
        match bind(&self.stream, &self.spec).await {
            Ok(consumer) => self.consumer = consumer,
            Err(e) => tracing::warn!(error = %e, "nats: cannot bind the consumer yet"),
        }
        true
    }
}

impl Feed<'_> {
    /// Wraps and sends one message; `false` when the pipeline is gone or shutting down.
    async fn hand_over(&self, kind: Kind, m: JsMessage, permits: &mut Vec<OwnedSemaphorePermit>) -> bool {
        // The server never sends more than asked; if it did, the message is held anyway.
        let permit = permits.pop().or_else(|| self.room.clone().try_acquire_owned().ok());
        let Some(message) = self.message(kind, m, permit) else {
            return true;
        };
        tokio::select! {
            sent = self.tx.send(message) => sent.is_ok(),
            _ = self.shutdown.cancelled() => false,
        }
    }
}

/// Where fetched messages go: registered with the keeper, then sent to the pipeline.
struct Feed<'a> {
    tx: &'a mpsc::Sender<Message>,
    keeper: &'a Keeper,
    room: Arc<Semaphore>,
    ids: AtomicU64,
    shutdown: &'a CancellationToken,
}

/// The messages of a batch that have already arrived, without waiting for more.
fn arrived(batch: &mut Batch) -> Vec<JsMessage> {
    let mut out = Vec::new();
    while let Some(Some(Ok(m))) = batch.next().now_or_never() {
        out.push(m);
    }
    out
}

/// Waits for room for at least one message, then takes what else is free, up to `batch`.
async fn reserve(
    room: &Arc<Semaphore>,
    batch: usize,
    shutdown: &CancellationToken,
) -> Option<Vec<OwnedSemaphorePermit>> {
    let first = tokio::select! {
        _ = shutdown.cancelled() => return None,
        p = room.clone().acquire_owned() => p.ok()?,
    };
    let mut permits = vec![first];
    while permits.len() < batch {
        match room.clone().try_acquire_owned() {
            Ok(p) => permits.push(p),
            Err(_) => break,
        }
    }
    Some(permits)
}

/// Keeps readiness on the connection state and the lag metric on the consumer's pending
/// count, until aborted.
async fn watch_health(
    client: async_nats::Client,
    mut consumer: PullConsumer,
    stream: String,
    name: String,
    ready: Arc<AtomicBool>,
) {
    // Consumer-wide: every replica reports the same figure (dashboards take the max).
    let lag = metrics::get().nats_consumer_pending.with_label_values(&[&stream, &name]);
    lag.set(consumer.cached_info().num_pending as i64);
    let mut readiness = tokio::time::interval(READY_INTERVAL);
    let mut pending = tokio::time::interval(LAG_INTERVAL);
    loop {
        tokio::select! {
            _ = readiness.tick() => {
                let connected = client.connection_state() == async_nats::connection::State::Connected;
                ready.store(connected, Ordering::SeqCst);
            }
            _ = pending.tick() => match consumer.info().await {
                Ok(info) => lag.set(info.num_pending as i64),
                Err(e) => tracing::debug!(error = %e, "nats: consumer info failed"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(max_hold: usize) -> Settings {
        Settings {
            url: "nats://127.0.0.1:4222".into(),
            stream: "CHANGES".into(),
            subjects: vec!["changes.>".into()],
            consumer: "bridge".into(),
            retry_stream: "CHANGES_RETRY".into(),
            retry_subject: "hookbridge.retry.bridge".into(),
            credentials: NatsCredentials::default(),
            max_hold,
            drain: Duration::from_secs(1),
        }
    }

    #[test]
    fn events_and_retry_records_share_the_room_without_taking_it_all() {
        for max_hold in [1, 64, 256, 1024, 16_384] {
            let s = settings(max_hold);
            let (events, retries) = (s.events_batch(), s.retry_share());
            assert!(events >= 1 && retries >= 1, "{max_hold}: {events} {retries}");
            // While one loop waits on a pull with its permits, the other can still get some.
            if max_hold > 1 {
                assert!(events + retries <= max_hold, "{max_hold}: {events} + {retries}");
            }
        }
        assert_eq!((settings(256).events_batch(), settings(256).retry_share()), (192, 64));
    }

    #[test]
    fn the_retry_consumer_has_its_own_name_filter_and_no_cap() {
        let spec = settings(256).retry_spec();
        assert_eq!(spec.name, "bridge-retry");
        assert_eq!(spec.stream, "CHANGES_RETRY");
        assert_eq!(spec.config.filter_subject, "hookbridge.retry.bridge");
        assert_eq!(spec.config.ack_policy, AckPolicy::Explicit);
        assert_eq!((spec.config.max_deliver, spec.config.max_ack_pending), (-1, -1));
    }
}
