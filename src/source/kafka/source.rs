//! The consumer-group source. One thread polls the group consumer and the retry-topic
//! consumer, and never blocks on the pipeline: messages go to a forwarder task through an
//! unbounded queue whose size is bounded by pausing each partition whose share of the
//! backlog (messages read and not settled) is full, and resuming it when its share has
//! drained by a quarter. So the group sees a live member however slow the endpoints are, and
//! memory stays bounded.
//!
//! Positions are committed only up to the first message whose outcomes are not all final
//! ([`super::offsets`]), as they become final at a bounded rate ([`super::commit`]); on
//! revoke and shutdown they are committed at once, after the in-flight work had its chance
//! to finish. The thread itself is [`super::poller`]; the retry layout it keeps up to date
//! as topics and partitions appear is [`super::poller::layout`].

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::BaseConsumer;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::client;
use super::commit::{Answers, Pacer, INTERVAL};
use super::offsets::Tracker;
use super::poller::{ErrorLog, Poller};
use super::rebalance::{MainContext, RetryContext};
use super::refetch;
use super::retry::{KafkaRetry, MapCell, Waiting};
use super::shared::{Handover, Shared};
use super::KafkaError;
use crate::config::kafka_topics::Subscription;
use crate::config::{Config, KafkaInput};
use crate::source::{Message, RetryStage, Source, SourceError};

/// The Kafka source.
pub struct KafkaSource {
    main: BaseConsumer<MainContext>,
    retry: Arc<BaseConsumer<RetryContext>>,
    shared: Arc<Shared>,
    stage: Arc<KafkaRetry>,
    subscription: Subscription,
    group: String,
    admin: ClientConfig,
    bound: usize,
    refetch: std::sync::mpsc::Receiver<(i32, i64)>,
}

impl KafkaSource {
    /// Builds the consumers and the retry producer; nothing connects yet. The pipeline takes
    /// in at most `max_pending` events ahead of their outcomes.
    pub fn open(input: &KafkaInput, config: &Config, max_pending: usize) -> Result<KafkaSource, KafkaError> {
        let KafkaInput { brokers, group_id, subscription, properties, retry_topic, group_instance_id } = input;
        let drain_timeout = config.delivery.shutdown_timeout;
        let map = Arc::new(MapCell::default());
        let retry_settings = client::retry_consumer(brokers, group_id, properties);
        let retry_answers = Arc::new(Answers::default());
        let found = Arc::new(crate::source::FoundBook::default());
        let shared = Arc::new(Shared {
            group: group_id.clone(),
            found: found.clone(),
            main: Tracker::new(),
            retry: Tracker::new(),
            waiting: Mutex::new(Waiting::default()),
            filters: Mutex::new(HashMap::new()),
            map: map.clone(),
            links: Mutex::new(BTreeMap::new()),
            layout_stale: AtomicBool::new(false),
            retry_topic: retry_topic.as_str().into(),
            scan_settings: retry_settings.clone(),
            drain_timeout,
            shutdown_deadline: Mutex::new(None),
            main_answers: Answers::default(),
            retry_answers: retry_answers.clone(),
            ready: Default::default(),
        });
        let retry: BaseConsumer<RetryContext> = retry_settings
            .create_with_context(RetryContext { answers: retry_answers })
            .map_err(KafkaError::Settings)?;
        let retry = Arc::new(retry);
        let instance = group_instance_id.as_deref().filter(|i| !i.is_empty());
        let settings = client::consumer(brokers, group_id, instance, properties);
        let main: BaseConsumer<MainContext> = settings
            .create_with_context(MainContext { shared: shared.clone(), retry: retry.clone() })
            .map_err(KafkaError::Settings)?;
        let max_poll = settings.get("max.poll.interval.ms").and_then(|v| v.parse::<u64>().ok()).unwrap_or(300_000);
        if drain_timeout >= Duration::from_millis(max_poll) {
            tracing::warn!(
                "delivery.shutdown_timeout is not shorter than max.poll.interval.ms: a revoke that waits for slow deliveries may get this replica removed from the group"
            );
        }
        let inherited = crate::config::kafka_properties::for_producers(properties);
        let (refetch_tx, refetch) = std::sync::mpsc::channel();
        let stage = Arc::new(KafkaRetry::new(
            &client::producer(brokers, &inherited),
            retry_topic,
            group_id,
            map,
            found,
            refetch_tx,
        )?);
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
            subscription: subscription.clone(),
            group: group_id.clone(),
            admin,
            // What the pipeline takes in (its read-ahead) plus its channel: enough to keep
            // it fed while a resume takes effect.
            bound: max_pending + 256,
            refetch,
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
        self.shared.attach_ready(ready);
        let (fwd, fwd_rx) = mpsc::unbounded_channel();
        let forwarder = tokio::spawn(forward(fwd_rx, tx, shutdown.clone()));
        // Stopped with the source, whether it stops for shutdown or fails.
        let stop_refetch = shutdown.child_token();
        let (shared, requests, refetch_fwd, refetch_shutdown) =
            (self.shared.clone(), self.refetch, fwd.clone(), stop_refetch.clone());
        let refetcher =
            tokio::task::spawn_blocking(move || refetch::run(shared, requests, refetch_fwd, refetch_shutdown));
        let poller = Poller {
            main: Arc::new(self.main),
            retry: self.retry,
            shared: self.shared,
            subscription: self.subscription,
            group: self.group,
            admin: self.admin,
            bound: self.bound,
            fwd,
            shutdown,
            errors: ErrorLog::default(),
            lag: None,
            paused_main: Default::default(),
            paused_retry: Default::default(),
            main_pacer: Pacer::new(INTERVAL),
            retry_pacer: Pacer::new(INTERVAL),
            layout: Default::default(),
        };
        let result = tokio::task::spawn_blocking(move || poller.run()).await.map_err(SourceError::Task);
        stop_refetch.cancel();
        let _ = refetcher.await;
        let result = result?;
        let _ = forwarder.await;
        result.map_err(SourceError::from)
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
