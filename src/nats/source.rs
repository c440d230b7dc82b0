//! The JetStream source: a durable pull consumer on the user's stream, fetched in batches no
//! larger than the room this replica has, each message handed over with an [`Ack`] that
//! the [`Keeper`] turns into a confirmed `+ACK` or a `-NAK` with delay.

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
use serde_json::json;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::connect::{connect, error_chain, Connection};
use super::error::NatsError;
use super::keeper::{progress_interval, Keeper};
use crate::config::raw::NatsCredentials;
use crate::config::{Config, SourceConfig};
use crate::metrics;
use crate::source::{Ack, Message, RetryStage, Source, SourceError};

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
    /// Authentication and TLS.
    pub credentials: NatsCredentials,
    /// Messages this replica holds at most (fetched and not settled).
    pub max_hold: usize,
    /// In-process attempts per delivery of a message: a redelivered message has had
    /// `(delivered - 1) * quick_attempts` already.
    pub quick_attempts: u32,
    /// How long to wait for held messages to settle after shutdown.
    pub drain: Duration,
}

impl Settings {
    /// The settings of a config whose source is NATS.
    pub fn from_config(config: &Config) -> Option<Settings> {
        let SourceConfig::Nats { url, stream, subjects, consumer, credentials } = &config.source else {
            return None;
        };
        Some(Settings {
            url: url.clone(),
            stream: stream.clone(),
            subjects: subjects.clone(),
            consumer: consumer.clone(),
            credentials: credentials.clone(),
            max_hold: crate::pipeline::max_pending(config),
            quick_attempts: config.delivery.quick_attempts.max(1),
            drain: config.delivery.shutdown_timeout.0,
        })
    }

    /// `max_ack_pending` of a consumer the bridge creates. It caps messages delivered and not
    /// acked across all replicas, and messages waiting for a delayed redelivery count too:
    /// a small cap would let one long outage of one endpoint stop the whole consumer.
    pub fn max_ack_pending(&self) -> i64 {
        (self.max_hold * 16).max(10_000) as i64
    }

    /// The consumer the bridge creates when none exists.
    fn consumer_config(&self) -> PullConfig {
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
        config
    }
}

/// The bound source.
pub struct NatsSource {
    settings: Settings,
    conn: Connection,
    stream: Stream,
    consumer: PullConsumer,
    ack_wait: Duration,
}

impl NatsSource {
    /// Connects, checks the stream exists, and binds the durable consumer (creating it when
    /// missing).
    pub async fn open(settings: Settings) -> Result<NatsSource, NatsError> {
        let conn = connect(&settings.url, &settings.credentials, &format!("hookbridge/{}", settings.consumer)).await?;
        let stream = get_stream(&conn, &settings.stream).await?;
        let consumer = bind(&stream, &settings).await?;
        let ack_wait = consumer.cached_info().config.ack_wait;
        let ack_wait = if ack_wait.is_zero() { DEFAULT_ACK_WAIT } else { ack_wait };
        tracing::info!(
            stream = %settings.stream,
            consumer = %settings.consumer,
            ack_wait_ms = ack_wait.as_millis() as u64,
            pending = consumer.cached_info().num_pending,
            "nats: consumer bound"
        );
        Ok(NatsSource { settings, conn, stream, consumer, ack_wait })
    }

    /// One message as the pipeline sees it; `None` if it carries no JetStream metadata.
    fn message(&self, msg: JsMessage, feed: &Feed<'_>, room: Option<OwnedSemaphorePermit>) -> Option<Message> {
        let (stream, sequence, delivered) = match msg.info() {
            Ok(info) => (info.stream.to_string(), info.stream_sequence, info.delivered),
            Err(e) => {
                tracing::warn!(error = %e, subject = %msg.subject, "nats: message without JetStream metadata skipped");
                return None;
            }
        };
        let reply = msg.reply.clone()?;
        let headers = msg
            .headers
            .iter()
            .flat_map(|h| h.iter())
            .flat_map(|(name, values)| values.iter().map(move |v| (name.to_string(), v.as_str().as_bytes().to_vec())))
            .collect();
        // A redelivery of the source message (after a crash or a lost ack) charges no attempts:
        // attempts are counted per action, in the retry records of the actions that failed.
        let held = feed.keeper.hold(feed.ids.fetch_add(1, Ordering::Relaxed), reply, room);
        Some(Message {
            coords: json!({
                "type": "nats",
                "stream": stream,
                "subject": msg.subject.as_str(),
                "sequence": sequence,
                "delivered": delivered,
            }),
            payload: msg.message.payload.to_vec(),
            headers,
            // The ack is settled by the pipeline only once every outcome for this message is
            // final (or parked in a delayed redelivery); the keeper confirms it with the
            // server. Dropping it unsettled NAKs it so another replica can take it.
            ack: Ack::new(move |how| held.settle(how)),
            retry: None,
        })
    }
}

/// The stream, which must exist.
async fn get_stream(conn: &Connection, name: &str) -> Result<Stream, NatsError> {
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
async fn bind(stream: &Stream, settings: &Settings) -> Result<PullConsumer, NatsError> {
    let existing = match stream.consumer_info(&settings.consumer).await {
        Ok(info) => Some(info),
        Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => None,
        Err(e) => return Err(NatsError::js("looking up the consumer", error_chain(&e))),
    };
    let Some(info) = existing else {
        let created = match stream.create_consumer(settings.consumer_config()).await {
            Ok(consumer) => consumer,
            // Another replica may have created it a moment ago, with other settings.
            Err(create) => {
                let info = stream
                    .consumer_info(&settings.consumer)
                    .await
                    .map_err(|_| NatsError::js("creating the consumer", error_chain(&create)))?;
                check(&info, settings)?;
                return get_consumer(stream, settings).await;
            }
        };
        if let Err(e) = check(created.cached_info(), settings) {
            // A server older than 2.10 ignores several filter subjects and would have made a
            // consumer of the whole stream: do not leave it behind.
            let _ = stream.delete_consumer(&settings.consumer).await;
            return Err(e);
        }
        tracing::info!(consumer = %settings.consumer, "nats: durable consumer created");
        return Ok(created);
    };
    check(&info, settings)?;
    get_consumer(stream, settings).await
}

async fn get_consumer(stream: &Stream, settings: &Settings) -> Result<PullConsumer, NatsError> {
    stream
        .get_consumer(&settings.consumer)
        .await
        .map_err(|e| NatsError::js("binding the consumer", error_chain(e.as_ref())))
}

/// Whether a consumer can serve as the bridge's: pull, explicit acks, the configured filter.
fn check(info: &ConsumerInfo, settings: &Settings) -> Result<(), NatsError> {
    let mismatch = |reason: String| NatsError::ConsumerMismatch {
        stream: settings.stream.clone(),
        consumer: settings.consumer.clone(),
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
    let mut want = settings.subjects.clone();
    want.sort();
    if !want.is_empty() && have != want {
        let hint = if want.len() > 1 { " (several subjects need NATS Server 2.10 or later)" } else { "" };
        return Err(mismatch(format!(
            "it filters {have:?} but the config says subjects {want:?}{hint}; delete the consumer or use another name"
        )));
    }
    if c.max_deliver > 0 {
        tracing::warn!(
            consumer = %settings.consumer,
            max_deliver = c.max_deliver,
            "nats: the consumer has max_deliver set: the server drops a message after that many deliveries, without a dead letter"
        );
    }
    Ok(())
}

#[async_trait]
impl Source for NatsSource {
    fn retry_stage(&self) -> RetryStage {
        RetryStage::Redeliver
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
            self.consumer.clone(),
            self.settings.stream.clone(),
            self.settings.consumer.clone(),
            ready.clone(),
        ));
        let this = *self;
        let drain = this.settings.drain;
        if this.wait_for_orphans(&shutdown).await {
            this.fetch_loop(&tx, &keeper, &shutdown).await;
        }
        // Stop reading; what was fetched and not handed over is released by its guard.
        drop(keeper);
        drop(tx);
        // Wait for the held messages to settle and their acks to be confirmed: returning
        // earlier would let the process exit with acks unsent, and those messages would be
        // delivered again after ack_wait.
        if tokio::time::timeout(drain + Duration::from_secs(5), keeper_task).await.is_err() {
            tracing::warn!("nats: messages still unsettled at the drain deadline; they will be delivered again");
        }
        watcher.abort();
        ready.store(false, Ordering::SeqCst);
        Ok(())
    }
}

impl NatsSource {
    /// Messages unacknowledged at start were delivered to a replica that may have crashed;
    /// JetStream hands them out again only once their ack_wait expires, and prefers them to
    /// new messages then. Pulling at once would deliver newer events of their objects first,
    /// so the first pull waits one ack_wait. `false` when shut down meanwhile.
    async fn wait_for_orphans(&self, shutdown: &CancellationToken) -> bool {
        let unacked = match self.consumer.get_info().await {
            Ok(info) => info.num_ack_pending,
            Err(e) => {
                tracing::debug!(error = %e, "nats: consumer info failed");
                self.consumer.cached_info().num_ack_pending
            }
        };
        if unacked == 0 {
            return true;
        }
        let wait = self.ack_wait + Duration::from_millis(500);
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

    /// Pulls batches until `shutdown`, recovering from every error: a pull request lost with
    /// a restarted server, a deleted consumer, a stream briefly unavailable.
    async fn fetch_loop(mut self, tx: &mpsc::Sender<Message>, keeper: &Keeper, shutdown: &CancellationToken) {
        let feed = Feed {
            tx,
            keeper,
            // One permit per message held, returned when it settles. The pipeline reads ahead
            // at most max_pending events, so holding more would only age messages towards
            // their ack_wait.
            room: Arc::new(Semaphore::new(self.settings.max_hold)),
            ids: AtomicU64::new(0),
            shutdown,
        };
        let mut connections = self.conn.connections.clone();
        let mut pause = Duration::from_millis(100);
        loop {
            let Some(mut permits) = reserve(&feed.room, shutdown).await else { return };
            connections.borrow_and_update();
            let batch = tokio::select! {
                _ = shutdown.cancelled() => return,
                b = self.consumer.batch().max_messages(permits.len()).expires(PULL_EXPIRES).messages() => b,
            };
            let mut batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %error_chain(&e), "nats: pull request failed; retrying");
                    if !self.recover(&mut pause, shutdown).await {
                        return;
                    }
                    continue;
                }
            };
            let mut failed = false;
            loop {
                let next = tokio::select! {
                    _ = shutdown.cancelled() => {
                        // Hand back what already arrived rather than leave it to ack_wait.
                        for m in arrived(&mut batch) {
                            drop(self.message(m, &feed, None));
                        }
                        return;
                    }
                    next = batch.next() => next,
                    Ok(()) = connections.changed() => {
                        // The server may have restarted and forgotten this pull request.
                        // Take what already arrived, then ask again on the new connection.
                        tracing::debug!("nats: reconnected; pulling again");
                        for m in arrived(&mut batch) {
                            if !self.hand_over(m, &feed, &mut permits).await {
                                return;
                            }
                        }
                        break;
                    }
                };
                match next {
                    None => break,
                    Some(Ok(m)) => {
                        pause = Duration::from_millis(100);
                        if !self.hand_over(m, &feed, &mut permits).await {
                            return;
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %error_chain(e.as_ref()), "nats: pull failed; retrying");
                        failed = true;
                        break;
                    }
                }
            }
            drop(permits);
            if failed && !self.recover(&mut pause, shutdown).await {
                return;
            }
        }
    }

    /// Wraps and sends one message; `false` when the pipeline is gone or shutting down.
    async fn hand_over(&self, m: JsMessage, feed: &Feed<'_>, permits: &mut Vec<OwnedSemaphorePermit>) -> bool {
        // The server never sends more than asked; if it did, the message is held anyway.
        let permit = permits.pop().or_else(|| feed.room.clone().try_acquire_owned().ok());
        let Some(message) = self.message(m, feed, permit) else {
            return true;
        };
        tokio::select! {
            sent = feed.tx.send(message) => sent.is_ok(),
            _ = feed.shutdown.cancelled() => false,
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
        match bind(&self.stream, &self.settings).await {
            Ok(consumer) => self.consumer = consumer,
            Err(e) => tracing::warn!(error = %e, "nats: cannot bind the consumer yet"),
        }
        true
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

/// Waits for room for at least one message, then takes what else is free, up to a batch.
async fn reserve(room: &Arc<Semaphore>, shutdown: &CancellationToken) -> Option<Vec<OwnedSemaphorePermit>> {
    let first = tokio::select! {
        _ = shutdown.cancelled() => return None,
        p = room.clone().acquire_owned() => p.ok()?,
    };
    let mut permits = vec![first];
    while permits.len() < MAX_BATCH {
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
