//! The JetStream source: a durable pull consumer on the user's stream and one on the retry
//! stream, each fetched in batches no larger than the room this replica has, every message
//! handed over with an [`Ack`] that the [`Keeper`] turns into a confirmed `+ACK` (or a
//! `-NAK` when given up); retry records not yet due go back with a delayed `-NAK`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::stream::Stream;
use async_trait::async_trait;
use futures::StreamExt as _;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use super::connect::{connect, error_chain, NatsClient};
use super::consumer::{bind, effective_ack_wait, get_stream};
use super::error::NatsError;
use super::feed::{arrived, reserve, Feed, Kind};
use super::keeper::{progress_interval, Keeper};
use super::retry::{self, NatsRetry};
use super::settings::{ConsumerSpec, Settings};
use crate::metrics;
use crate::source::{Message, RetryStage, Source, SourceError};

/// How long a pull request waits on the server for messages. Short, so that a request the
/// server forgot without the client seeing a reconnection is soon replaced.
const PULL_EXPIRES: Duration = Duration::from_secs(5);
/// How long the pull of a crashed replica's unacknowledged messages waits for them: they are
/// due at once (their ack_wait has passed), so this only ends a pull that got fewer.
const ORPHANS_EXPIRE: Duration = Duration::from_secs(2);
/// How often the consumer's pending count is read for the lag metric.
const LAG_INTERVAL: Duration = Duration::from_secs(5);
/// How often readiness follows the connection state.
const READY_INTERVAL: Duration = Duration::from_secs(1);

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
        let conn = connect(
            &settings.input.url,
            &settings.input.credentials,
            &format!("hookbridge/{}", settings.input.consumer),
        )
        .await?;
        let stream = get_stream(&conn, &settings.input.stream).await?;
        let spec = settings.consumer_spec();
        let consumer = bind(&stream, &spec).await?;
        let ack_wait = effective_ack_wait(&consumer);
        tracing::info!(
            stream = %settings.input.stream,
            consumer = %settings.input.consumer,
            ack_wait_ms = ack_wait.as_millis() as u64,
            pending = consumer.cached_info().num_pending,
            "nats: consumer bound"
        );
        let events = Pull { kind: Kind::Events, stream, consumer, spec, batch: settings.events_batch() };
        let retry_stream =
            retry::ensure_stream(&conn, &settings.input.retry_stream, &settings.input.retry_subject).await?;
        let retry_spec = settings.retry_spec();
        let retry_consumer = bind(&retry_stream, &retry_spec).await?;
        tracing::info!(
            stream = %settings.input.retry_stream,
            subject = %settings.input.retry_subject,
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
        let stage = Arc::new(NatsRetry::new(&conn, &settings.input.retry_stream, &settings.input.retry_subject));
        Ok(NatsSource { settings, conn, events, retries, stage, ack_wait })
    }
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
            self.settings.input.stream.clone(),
            self.settings.input.consumer.clone(),
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
        let mut events = events;
        let events_loop = async {
            let Some(orphans) = wait_for_orphans(&events.consumer, &shutdown).await else { return };
            if orphans == 0 || events.take_orphans(&feed, orphans).await {
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
/// so the first pull waits one ack_wait. Returns how many were unacknowledged; `None` when
/// shut down meanwhile.
async fn wait_for_orphans(consumer: &PullConsumer, shutdown: &CancellationToken) -> Option<usize> {
    let unacked = match consumer.get_info().await {
        Ok(info) => info.num_ack_pending,
        Err(e) => {
            tracing::debug!(error = %e, "nats: consumer info failed");
            consumer.cached_info().num_ack_pending
        }
    };
    if unacked == 0 {
        return Some(0);
    }
    let wait = effective_ack_wait(consumer) + Duration::from_millis(500);
    tracing::info!(
        unacked,
        wait_ms = wait.as_millis() as u64,
        "nats: messages are unacknowledged by another (or a crashed) replica; waiting for their redelivery before the first pull"
    );
    tokio::select! {
        _ = shutdown.cancelled() => None,
        _ = tokio::time::sleep(wait) => Some(unacked),
    }
}

impl Pull {
    /// After [`wait_for_orphans`]: pulls the `unacked` messages left by a crashed replica (as
    /// many as this replica has room for) and hands them over in stream order. JetStream
    /// redelivers them in the order their ack deadlines expired, and the crashed replica's
    /// in-progress acks had moved those deadlines apart: handed over as they come, a later
    /// event of an object would be delivered before an earlier one. Messages never delivered
    /// come after them in the stream, so sorting the whole pull keeps them in place. `false`
    /// when shut down meanwhile.
    async fn take_orphans(&mut self, feed: &Feed<'_>, unacked: usize) -> bool {
        let shutdown = feed.shutdown;
        let Some(mut permits) = reserve(&feed.room, unacked, shutdown).await else { return false };
        let batch = tokio::select! {
            _ = shutdown.cancelled() => return false,
            b = self.consumer.batch().max_messages(permits.len()).expires(ORPHANS_EXPIRE).messages() => b,
        };
        let mut batch = match batch {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(consumer = %self.spec.name, error = %error_chain(&e), "nats: pulling the unacknowledged messages failed; pulling as usual");
                return true;
            }
        };
        let mut pulled = Vec::new();
        while pulled.len() < permits.len() {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    for m in pulled.into_iter().chain(arrived(&mut batch)) {
                        drop(feed.message(self.kind, m, None));
                    }
                    return false;
                }
                next = batch.next() => match next {
                    Some(Ok(m)) => pulled.push(m),
                    Some(Err(e)) => {
                        tracing::debug!(error = %error_chain(e.as_ref()), "nats: the pull of unacknowledged messages ended");
                        break;
                    }
                    None => break,
                },
            }
        }
        pulled.sort_by_key(|m| m.info().map_or(u64::MAX, |i| i.stream_sequence));
        tracing::info!(consumer = %self.spec.name, messages = pulled.len(), "nats: unacknowledged messages taken back, in stream order");
        for m in pulled {
            if !feed.hand_over(self.kind, m, &mut permits).await {
                return false;
            }
        }
        true
    }

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
