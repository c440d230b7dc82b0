//! Event sources, side by side: [`file`] (JSON Lines, the embedded default), [`kafka`]
//! (consumer group, retry topic) and [`nats`] (JetStream pull consumers, retry stream). Each
//! reads messages and hands them over with their [`Coords`] and an [`Ack`] that releases the
//! source position. The pipeline settles an `Ack` only once every outcome for the message
//! is final, so a crash at any instant leaves the message to be read again.
//!
//! Their destinations are in the sibling folder [`crate::sink`]. A source knows nothing of
//! the pipeline: what it needs from it (how many events may be pending) is passed to
//! [`open`].

mod coords;
pub(crate) mod file;
pub mod kafka;
pub mod nats;

pub use coords::{Coords, KafkaRecord, NatsRecord};

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use thiserror::Error;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Input};

/// How a message is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Every outcome is final: release the position.
    Done,
    /// Some delivery waits for a long retry that the broker holds (JetStream redelivery
    /// after this delay).
    Redeliver(Duration),
}

/// Releases a message's source position; dropping it unsettled leaves the message to be
/// delivered again (after a restart or rebalance).
pub struct Ack {
    settle: Option<Box<dyn FnOnce(Settle) + Send>>,
    hold: Option<Box<dyn FnOnce() + Send>>,
}

impl Ack {
    /// An acknowledgement that runs `f`.
    pub fn new(f: impl FnOnce(Settle) + Send + 'static) -> Ack {
        Ack { settle: Some(Box::new(f)), hold: None }
    }

    /// As [`Ack::new`], with `hold` told when the message waits in the dispatcher's bounded
    /// holding area (lane parking) rather than being worked on: a source that limits its
    /// read-ahead per partition stops counting it there, so that held messages cannot stop
    /// the reading of the very records that would free them.
    pub fn with_hold(f: impl FnOnce(Settle) + Send + 'static, hold: impl FnOnce() + Send + 'static) -> Ack {
        Ack { settle: Some(Box::new(f)), hold: Some(Box::new(hold)) }
    }

    /// An acknowledgement with nothing to release (a file has no position to commit).
    pub fn none() -> Ack {
        Ack { settle: None, hold: None }
    }

    /// The message is held (see [`Ack::with_hold`]); told once at most.
    pub fn hold(&mut self) {
        if let Some(f) = self.hold.take() {
            f();
        }
    }

    /// Settles the message.
    pub fn settle(mut self, how: Settle) {
        if let Some(f) = self.settle.take() {
            f(how);
        }
    }
}

/// A long-retry record: the message carries one delivery that is due again.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RetryInfo {
    /// Trigger name.
    pub trigger: String,
    /// Action name.
    pub action: String,
    /// Mention index, for mention triggers.
    pub mention: Option<usize>,
    /// Attempts already made.
    pub attempts: u32,
    /// When the first attempt was made (unix ms), for the duration metric.
    pub first_attempt_ms: i64,
}

/// One message from a source.
pub struct Message {
    /// The payload bytes.
    pub payload: Vec<u8>,
    /// Transport headers (Kafka headers, NATS headers).
    pub headers: Vec<(String, Vec<u8>)>,
    /// Where it came from.
    pub coords: Coords,
    /// Releases the position.
    pub ack: Ack,
    /// Set when this message is a record of the durable retry stage: the one delivery it
    /// carries, or why its retry headers could not be read (such a record is dead-lettered,
    /// never run as a new event: its other actions were already delivered).
    pub retry: Option<Result<RetryInfo, String>>,
}

/// A delivery found waiting in the durable retry stage when this replica took its
/// partition (after a crash or a rebalance). The dispatcher parks the delivery's lane behind
/// it before any newer message of that partition is read, so that a newer event of the
/// object does not overtake it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundAway {
    /// The object, `class::key`.
    pub object: String,
    /// Trigger name.
    pub trigger: String,
    /// Action name.
    pub action: String,
    /// Mention index, for mention triggers.
    pub mention: Option<usize>,
    /// The original message's place in its source ([`Coords::order`]).
    pub order: (i64, i64),
    /// When it is due (unix ms).
    pub due_ms: i64,
}

/// Deliveries found waiting, from the source that finds them to the dispatcher that parks
/// their lanes; cheap to look at when empty, as the dispatcher looks before every delivery.
#[derive(Debug, Default)]
pub struct FoundBook {
    any: std::sync::atomic::AtomicBool,
    found: std::sync::Mutex<Vec<FoundAway>>,
}

impl FoundBook {
    /// Adds deliveries found.
    pub fn add(&self, found: Vec<FoundAway>) {
        if found.is_empty() {
            return;
        }
        self.found.lock().unwrap_or_else(|p| p.into_inner()).extend(found);
        self.any.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Takes what was found since the last call.
    pub fn take(&self) -> Vec<FoundAway> {
        // Read first: a swap on every delivery would write the shared flag from every worker.
        if !self.any.load(std::sync::atomic::Ordering::Acquire)
            || !self.any.swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            return Vec::new();
        }
        std::mem::take(&mut *self.found.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Where deliveries wait when their quick in-process attempts are used up.
#[derive(Clone)]
pub enum RetryStage {
    /// No durable stage: keep retrying in process (file source).
    InProcess,
    /// A durable retry topic that hands the delivery back when due.
    Handoff(Arc<dyn DurableRetry>),
}

/// A durable stage that holds a delivery until it is due.
#[async_trait]
pub trait DurableRetry: Send + Sync {
    /// Stores the delivery; returns once the store is durable.
    async fn schedule(&self, message: &Message, info: RetryInfo, delay: Duration) -> Result<(), ScheduleError>;

    /// The deliveries found waiting in the stage since the last call (`FoundAway`).
    fn take_found(&self) -> Vec<FoundAway> {
        Vec::new()
    }

    /// Whether the stage can read the record a returning message at `coords` came from
    /// again, by [`DurableRetry::fetch_again`], once that message is let go unsettled: then
    /// the dispatcher need not hold it, nor store it again, while it waits for its turn.
    fn can_fetch_again(&self, _coords: &Coords) -> bool {
        false
    }

    /// Reads the record at `coords` again; it comes back as a returning message. One that
    /// cannot be read any more (its partition moved to another replica) comes back from
    /// wherever the stage's records are read next.
    fn fetch_again(&self, _coords: &Coords) {}
}

/// A durable retry stage in two steps, for which [`DurableRetry`] is implemented once: the
/// record is made from the message before any future starts (a future holding `&Message`
/// would not be `Send`: the message is not `Sync`), then stored.
pub(crate) trait TwoStepRetry: Send + Sync {
    /// What is stored.
    type Record: Send;
    /// Why making or storing it failed.
    type Error: Into<ScheduleError> + Send;
    /// The record of a delivery of `message`, due after `delay`.
    fn record(&self, message: &Message, info: &RetryInfo, delay: Duration) -> Result<Self::Record, Self::Error>;
    /// Stores it; returns once the store is durable.
    fn store(&self, record: Self::Record) -> impl Future<Output = Result<(), Self::Error>> + Send;
    /// The deliveries found waiting in the stage since the last call (`FoundAway`).
    fn take_found(&self) -> Vec<FoundAway> {
        Vec::new()
    }
    /// See [`DurableRetry::can_fetch_again`].
    fn can_fetch_again(&self, _coords: &Coords) -> bool {
        false
    }
    /// See [`DurableRetry::fetch_again`].
    fn fetch_again(&self, _coords: &Coords) {}
}

// Written out rather than with `#[async_trait]`: the record is made before the future starts.
impl<T: TwoStepRetry> DurableRetry for T {
    fn schedule<'life0, 'life1, 'async_trait>(
        &'life0 self,
        message: &'life1 Message,
        info: RetryInfo,
        delay: Duration,
    ) -> Pin<Box<dyn Future<Output = Result<(), ScheduleError>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        let record = self.record(message, &info, delay);
        Box::pin(async move { self.store(record.map_err(Into::into)?).await.map_err(Into::into) })
    }

    fn take_found(&self) -> Vec<FoundAway> {
        TwoStepRetry::take_found(self)
    }

    fn can_fetch_again(&self, coords: &Coords) -> bool {
        TwoStepRetry::can_fetch_again(self, coords)
    }

    fn fetch_again(&self, coords: &Coords) {
        TwoStepRetry::fetch_again(self, coords)
    }
}

/// Why a delivery could not be stored in the durable retry stage.
#[derive(Debug, Error)]
pub enum ScheduleError {
    /// The Kafka retry topic did not take it.
    #[error(transparent)]
    Kafka(#[from] kafka::KafkaError),
    /// The NATS retry stream did not take it.
    #[error(transparent)]
    Nats(#[from] nats::retry::ScheduleError),
    /// Another stage (tests, embedders) refused it.
    #[error("{0}")]
    Other(String),
}

/// Why a source could not be opened.
#[derive(Debug, Error)]
pub enum OpenError {
    /// The Kafka consumers or the retry producer could not be set up.
    #[error(transparent)]
    Kafka(#[from] kafka::KafkaError),
    /// The JetStream consumers could not be set up (after waiting out passing failures).
    #[error(transparent)]
    Nats(#[from] nats::NatsError),
}

/// Why a source stopped.
#[derive(Debug, Error)]
pub enum SourceError {
    /// Opening or reading the file failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The Kafka consumer failed.
    #[error(transparent)]
    Kafka(#[from] kafka::KafkaError),
    /// The source's own task panicked or was aborted.
    #[error("the source task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Opens the configured source; it reads at most `max_pending` events ahead of their final
/// outcomes (the pipeline's bound).
pub(crate) async fn open(config: &Config, max_pending: usize) -> Result<Box<dyn Source>, OpenError> {
    Ok(match &config.source {
        Input::File { path, follow } => {
            Box::new(file::FileSource::new(path, *follow).with_max_event_bytes(config.delivery.max_event_bytes))
        }
        Input::Kafka(kafka) => Box::new(kafka::source::KafkaSource::open(kafka, config, max_pending)?),
        Input::Nats(nats) => Box::new(nats::open_source(nats, max_pending, config.delivery.shutdown_timeout).await?),
    })
}

/// A running source.
#[async_trait]
pub trait Source: Send {
    /// How long retries are held.
    fn retry_stage(&self) -> RetryStage;

    /// Whether the broker offers a message again by itself when it is left unacknowledged
    /// (JetStream after `ack_wait` or a NAK); Kafka only re-reads after a restart or a
    /// rebalance, so a message it holds back stops its partition.
    fn redelivers_unsettled(&self) -> bool {
        false
    }

    /// Reads until the end (file without follow), an error, or `shutdown`; sets `ready`
    /// once connected.
    async fn run(
        self: Box<Self>,
        tx: mpsc::Sender<Message>,
        ready: Arc<AtomicBool>,
        shutdown: CancellationToken,
    ) -> Result<(), SourceError>;
}
