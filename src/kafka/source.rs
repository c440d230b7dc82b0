//! The consumer-group source. One thread polls the group consumer and the retry-topic
//! consumer, and never blocks on the pipeline: messages go to a forwarder task through an
//! unbounded queue whose size is bounded by pausing each partition whose share of the
//! backlog (messages read and not settled) is full, and resuming it when its share has
//! drained by half. So the group sees a live member however slow the endpoints are, and
//! memory stays bounded.
//!
//! Positions are stored (and committed every second by librdkafka) only up to the first
//! message whose outcomes are not all final ([`super::offsets`]); on revoke and shutdown
//! they are committed explicitly after the in-flight work had its chance to finish. The
//! thread itself is [`super::poller`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::BaseConsumer;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::client;
use super::offsets::{Tp, Tracker};
use super::poller::{ErrorLog, Poller};
use super::rebalance::{MainContext, RetryContext};
use super::retry::{KafkaRetry, RetryMap, Waiting};
use super::KafkaError;
use crate::config::{Config, SourceConfig};
use crate::source::{Message, RetryStage, Source, SourceError};

/// State shared by the consumer thread, the rebalance callbacks, the forwarder and the
/// acknowledgements.
pub struct Shared {
    /// Positions of the source partitions.
    pub(crate) main: Arc<Tracker>,
    /// Positions of the retry partitions.
    pub(crate) retry: Arc<Tracker>,
    /// Retry records read and not yet due.
    pub(crate) waiting: Mutex<Waiting<Handover>>,
    /// Source partition -> retry partition, known once the consumer thread has started.
    pub(crate) map: Arc<OnceLock<RetryMap>>,
    /// The retry topic.
    pub(crate) retry_topic: Arc<str>,
    /// How long a revoke or a shutdown waits for in-flight work.
    pub(crate) drain_timeout: Duration,
    /// Set once shutting down: revokes do not wait past it.
    pub(crate) shutdown_deadline: Mutex<Option<Instant>>,
    ready: OnceLock<Arc<AtomicBool>>,
}

impl Shared {
    /// Until when a revoke may wait for in-flight work that starts now: the drain timeout,
    /// and never past the shutdown deadline once shutting down.
    pub(crate) fn drain_deadline(&self, now: Instant) -> Instant {
        let own = now + self.drain_timeout;
        match *self.shutdown_deadline.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(d) => own.min(d),
            None => own,
        }
    }

    /// The source is connected.
    pub(crate) fn set_ready(&self) {
        if let Some(r) = self.ready.get() {
            r.store(true, Ordering::SeqCst);
        }
    }
}

/// A message on its way to the pipeline, with what is needed to drop it if its partition
/// was revoked meanwhile.
pub struct Handover {
    pub(crate) message: Message,
    pub(crate) tracker: Arc<Tracker>,
    pub(crate) tp: Tp,
    pub(crate) generation: u64,
    pub(crate) offset: i64,
}

/// The Kafka source.
pub struct KafkaSource {
    main: BaseConsumer<MainContext>,
    retry: Arc<BaseConsumer<RetryContext>>,
    shared: Arc<Shared>,
    stage: Arc<KafkaRetry>,
    topics: Vec<String>,
    group: String,
    admin: ClientConfig,
    bound: usize,
}

impl KafkaSource {
    /// Builds the consumers and the retry producer; nothing connects yet.
    pub fn open(config: &Config) -> Result<KafkaSource, KafkaError> {
        let SourceConfig::Kafka { brokers, group_id, topics, properties, retry_topic } = &config.source else {
            return Err(KafkaError::Setting { place: "source", message: "not a kafka source".into() });
        };
        if topics.is_empty() {
            return Err(KafkaError::Setting { place: "source.topics", message: "at least one topic is needed".into() });
        }
        let retry_topic = retry_topic.clone().unwrap_or_else(|| format!("{}.retry", topics[0]));
        if topics.contains(&retry_topic) {
            return Err(KafkaError::Setting {
                place: "source.retry_topic",
                message: format!("{retry_topic:?} is also a source topic; it must be a topic of its own"),
            });
        }
        let drain_timeout = config.delivery.shutdown_timeout.0;
        let map = Arc::new(OnceLock::new());
        let shared = Arc::new(Shared {
            main: Tracker::new(),
            retry: Tracker::new(),
            waiting: Mutex::new(Waiting::default()),
            map: map.clone(),
            retry_topic: retry_topic.as_str().into(),
            drain_timeout,
            shutdown_deadline: Mutex::new(None),
            ready: OnceLock::new(),
        });
        let retry: BaseConsumer<RetryContext> = client::retry_consumer(brokers, group_id, properties)
            .create_with_context(RetryContext)
            .map_err(KafkaError::Settings)?;
        let retry = Arc::new(retry);
        let settings = client::consumer(brokers, group_id, properties);
        let main: BaseConsumer<MainContext> = settings
            .create_with_context(MainContext { shared: shared.clone(), retry: retry.clone() })
            .map_err(KafkaError::Settings)?;
        let max_poll = settings.get("max.poll.interval.ms").and_then(|v| v.parse::<u64>().ok()).unwrap_or(300_000);
        if drain_timeout >= Duration::from_millis(max_poll) {
            tracing::warn!(
                "delivery.shutdown_timeout is not shorter than max.poll.interval.ms: a revoke that waits for slow deliveries may get this replica removed from the group"
            );
        }
        let inherited = client::inherited_by_producers(properties);
        let stage = Arc::new(KafkaRetry::new(&client::producer(brokers, &inherited), &retry_topic, group_id, map)?);
        let mut admin = ClientConfig::new();
        admin.set("bootstrap.servers", brokers.join(","));
        for (k, v) in &inherited {
            admin.set(k, v);
        }
        Ok(KafkaSource {
            main,
            retry,
            shared,
            stage,
            topics: topics.clone(),
            group: group_id.clone(),
            admin,
            // What the pipeline takes in (its read-ahead) plus its channel: enough to keep
            // it fed while a resume takes effect.
            bound: crate::pipeline::max_pending(config) + 256,
        })
    }
}

#[async_trait]
impl Source for KafkaSource {
    fn retry_stage(&self) -> RetryStage {
        RetryStage::Handoff(self.stage.clone())
    }

    async fn run(
        self: Box<Self>,
        tx: mpsc::Sender<Message>,
        ready: Arc<AtomicBool>,
        shutdown: CancellationToken,
    ) -> Result<(), SourceError> {
        let _ = self.shared.ready.set(ready);
        let (fwd, fwd_rx) = mpsc::unbounded_channel();
        let forwarder = tokio::spawn(forward(fwd_rx, tx, shutdown.clone()));
        let poller = Poller {
            main: Arc::new(self.main),
            retry: self.retry,
            shared: self.shared,
            topics: self.topics,
            group: self.group,
            admin: self.admin,
            bound: self.bound,
            fwd,
            shutdown,
            errors: ErrorLog::default(),
            lag: None,
            paused_main: Default::default(),
            paused_retry: Default::default(),
        };
        let result = tokio::task::spawn_blocking(move || poller.run())
            .await
            .map_err(|e| SourceError::Broker(format!("the kafka consumer thread failed: {e}")))?;
        let _ = forwarder.await;
        result.map_err(|e| SourceError::Broker(e.to_string()))
    }
}

/// Hands messages to the pipeline in the order they were read, dropping those whose
/// partition was revoked since (the new owner reads them again).
async fn forward(mut rx: mpsc::UnboundedReceiver<Handover>, tx: mpsc::Sender<Message>, shutdown: CancellationToken) {
    loop {
        let handover = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            h = rx.recv() => match h {
                Some(h) => h,
                None => return,
            },
        };
        // Room in the pipeline first, then the ownership check and the handing over in one
        // step: a revoke that starts while this waits does not wait for this message.
        let permit = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            permit = tx.reserve() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        if handover.tracker.hand_over(&handover.tp, handover.generation, handover.offset) {
            permit.send(handover.message);
        }
    }
}
