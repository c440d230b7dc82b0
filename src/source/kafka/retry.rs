//! The retry topic: where a delivery waits, without holding its source partition, until it
//! is due again.
//!
//! A parked delivery is a record carrying the original payload and headers, plus three
//! headers of ours: the [`RetryInfo`] as JSON, the time before which it must not be tried
//! (unix milliseconds), and the source coordinates of the original message.
//!
//! Every source partition has a retry partition of its own ([`RetryMap`]), and the replica
//! that owns the source partition also reads its retry partition. So a delivery comes back
//! to the replica that parked it, and the dispatcher there can keep later deliveries of the
//! same object and action behind it (lane parking); and the retry partition moves with its
//! source partition when the group rebalances.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::Consumer;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};

use super::client::Logging;
use super::KafkaError;
use crate::event::{parse_event, CloudEventHeaders};
use crate::source::{Coords, FoundAway, FoundBook, KafkaRecord, Message, RetryInfo, TwoStepRetry};

/// Header holding the [`RetryInfo`] as JSON.
pub const INFO_HEADER: &str = "hookbridge-retry";
/// Header holding the time before which the delivery must not be tried, unix milliseconds.
pub const NOT_BEFORE_HEADER: &str = "hookbridge-retry-not-before";
/// Header holding the original message's coordinates as JSON.
pub const ORIGIN_HEADER: &str = "hookbridge-retry-origin";
/// Header holding the consumer group that parked the delivery: deployments with different
/// groups on the same source topics may share the default retry topic, and each must take
/// back only its own deliveries.
pub const GROUP_HEADER: &str = "hookbridge-retry-group";

/// Which retry partition holds the deliveries of which source partition: the source
/// partitions of all subscribed topics, numbered one after the other in the layout order of
/// [`crate::config::kafka_topics::Subscription::layout`]. Partitions added to the last topic, and topics
/// that sort last, extend the layout without moving the partitions before them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryMap {
    layout: Vec<(String, i32)>,
    topics: HashMap<String, (i32, i32)>,
    needed: i32,
    available: i32,
}

impl RetryMap {
    /// A map over `topics` (name, partition count) and a retry topic of `available` partitions.
    pub fn new(topics: &[(String, i32)], available: i32) -> RetryMap {
        let mut map = HashMap::new();
        let mut base = 0;
        for (name, count) in topics {
            map.insert(name.clone(), (base, *count));
            base += count;
        }
        RetryMap { layout: topics.to_vec(), topics: map, needed: base, available }
    }

    /// Retry partitions needed for one per source partition.
    pub fn needed(&self) -> i32 {
        self.needed
    }

    /// Partitions of the retry topic.
    pub fn available(&self) -> i32 {
        self.available
    }

    /// The source topics and their partition counts, in layout order.
    pub fn layout(&self) -> &[(String, i32)] {
        &self.layout
    }

    /// The retry partition of a source partition; `None` for a partition the layout does not
    /// know (yet), or when the retry topic has too few partitions.
    pub fn partition_for(&self, topic: &str, partition: i32) -> Option<i32> {
        let (base, count) = self.topics.get(topic)?;
        let r = base + partition;
        (partition >= 0 && partition < *count && r < self.available).then_some(r)
    }
}

/// The current [`RetryMap`], replaced when the subscribed topics or their partitions change
/// while running.
#[derive(Debug, Default)]
pub struct MapCell(RwLock<Option<Arc<RetryMap>>>);

impl MapCell {
    /// The current map; `None` before the source knows its topics.
    pub fn get(&self) -> Option<Arc<RetryMap>> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the map.
    pub fn set(&self, map: RetryMap) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(map));
    }
}

/// Where a parked delivery's message came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Origin {
    /// Source topic.
    pub topic: String,
    /// Source partition.
    pub partition: i32,
    /// Offset in the source partition.
    pub offset: i64,
}

impl Origin {
    /// The origin named by a message's coordinates (a retry record's coordinates are its
    /// origin's, so a delivery parked twice keeps its first coordinates).
    pub fn from_coords(coords: &Coords) -> Option<Origin> {
        match coords {
            Coords::Kafka { topic, partition, offset, .. } => {
                Some(Origin { topic: topic.clone(), partition: *partition, offset: *offset })
            }
            _ => None,
        }
    }

    /// The coordinates of a retry record: its origin's, and where the record itself is.
    pub fn coords(&self, retry_topic: &str, partition: i32, offset: i64) -> Coords {
        Coords::Kafka {
            topic: self.topic.clone(),
            partition: self.partition,
            offset: self.offset,
            retry: Some(KafkaRecord { topic: retry_topic.to_string(), partition, offset }),
        }
    }
}

/// A record read back from the retry topic.
#[derive(Debug)]
pub struct Returned {
    /// Which delivery, and how many attempts it had.
    pub info: RetryInfo,
    /// Not to be tried before this time (unix ms).
    pub not_before_ms: i64,
    /// The original message's coordinates.
    pub origin: Origin,
    /// The group that parked it.
    pub group: Option<String>,
    /// The original headers.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Reads our headers off a retry record; the others are the original message's.
pub fn decode(headers: Vec<(String, Vec<u8>)>) -> Result<Returned, String> {
    let mut info = None;
    let mut not_before = None;
    let mut origin = None;
    let mut group = None;
    let mut rest = Vec::new();
    for (k, v) in headers {
        match k.as_str() {
            INFO_HEADER => {
                info = Some(serde_json::from_slice::<RetryInfo>(&v).map_err(|e| format!("{INFO_HEADER}: {e}"))?)
            }
            NOT_BEFORE_HEADER => {
                let text = std::str::from_utf8(&v).map_err(|e| format!("{NOT_BEFORE_HEADER}: {e}"))?;
                not_before = Some(text.trim().parse::<i64>().map_err(|e| format!("{NOT_BEFORE_HEADER}: {e}"))?);
            }
            ORIGIN_HEADER => {
                origin = Some(serde_json::from_slice::<Origin>(&v).map_err(|e| format!("{ORIGIN_HEADER}: {e}"))?)
            }
            GROUP_HEADER => group = Some(String::from_utf8_lossy(&v).into_owned()),
            _ => rest.push((k, v)),
        }
    }
    Ok(Returned {
        info: info.ok_or(format!("no {INFO_HEADER} header"))?,
        not_before_ms: not_before.ok_or(format!("no {NOT_BEFORE_HEADER} header"))?,
        origin: origin.ok_or(format!("no {ORIGIN_HEADER} header"))?,
        group,
        headers: rest,
    })
}

/// The headers of a retry record: the original ones, then ours.
pub fn encode(
    headers: &[(String, Vec<u8>)],
    info: &RetryInfo,
    not_before_ms: i64,
    origin: &Origin,
    group: &str,
) -> OwnedHeaders {
    let mut out = OwnedHeaders::new_with_capacity(headers.len() + 4);
    for (k, v) in headers {
        out = out.insert(Header { key: k, value: Some(v.as_slice()) });
    }
    let info = serde_json::to_vec(info).expect("RetryInfo serializes");
    let origin = serde_json::to_vec(origin).expect("Origin serializes");
    let not_before = not_before_ms.to_string();
    out.insert(Header { key: INFO_HEADER, value: Some(info.as_slice()) })
        .insert(Header { key: NOT_BEFORE_HEADER, value: Some(not_before.as_bytes()) })
        .insert(Header { key: ORIGIN_HEADER, value: Some(origin.as_slice()) })
        .insert(Header { key: GROUP_HEADER, value: Some(group.as_bytes()) })
}

/// The durable retry stage of the Kafka source.
pub struct KafkaRetry {
    producer: FutureProducer<Logging>,
    topic: String,
    group: String,
    map: Arc<MapCell>,
    found: Arc<FoundBook>,
    /// Asks the thread that reads retry records again ([`super::refetch`]).
    refetch: std::sync::mpsc::Sender<(i32, i64)>,
}

impl KafkaRetry {
    /// A stage of `group` producing to `topic` with `settings`; `map` is filled by the
    /// source once it knows the partitions, `found` when it takes retry partitions;
    /// `refetch` asks for records to be read again.
    pub(crate) fn new(
        settings: &ClientConfig,
        topic: &str,
        group: &str,
        map: Arc<MapCell>,
        found: Arc<FoundBook>,
        refetch: std::sync::mpsc::Sender<(i32, i64)>,
    ) -> Result<KafkaRetry, KafkaError> {
        let producer = settings.create_with_context(Logging).map_err(KafkaError::Settings)?;
        Ok(KafkaRetry { producer, topic: topic.to_string(), group: group.to_string(), map, found, refetch })
    }

    /// The retry record a returning message at `coords` came from, if it is one of ours.
    fn record_of<'a>(&self, coords: &'a Coords) -> Option<&'a KafkaRecord> {
        match coords {
            Coords::Kafka { retry: Some(record), .. } if record.topic == self.topic => Some(record),
            _ => None,
        }
    }
}

/// A retry record ready to be produced.
pub(crate) struct Parked {
    partition: i32,
    key: String,
    payload: Vec<u8>,
    headers: OwnedHeaders,
}

impl TwoStepRetry for KafkaRetry {
    type Record = Parked;
    type Error = KafkaError;

    /// Builds the retry record of a delivery; synchronous, so that the future sending it
    /// does not hold the message (which is not `Sync`).
    fn record(&self, message: &Message, info: &RetryInfo, delay: Duration) -> Result<Parked, KafkaError> {
        let origin = Origin::from_coords(&message.coords)
            .ok_or_else(|| KafkaError::NotParkable(format!("no Kafka coordinates in {}", message.coords)))?;
        let partition =
            self.map.get().and_then(|m| m.partition_for(&origin.topic, origin.partition)).ok_or_else(|| {
                KafkaError::NotParkable(format!("no retry partition for {}/{}", origin.topic, origin.partition))
            })?;
        // Keyed by object like results, so the retry topic reads well; the partition is
        // chosen above, not by the key.
        let ce = CloudEventHeaders::from_headers(message.headers.iter().map(|(k, v)| (k.as_str(), v.as_slice())));
        let key = parse_event(&message.payload, ce.as_ref()).map(|e| e.object_key()).unwrap_or_default();
        let not_before = chrono::Utc::now().timestamp_millis() + delay.as_millis() as i64;
        Ok(Parked {
            partition,
            key,
            payload: message.payload.clone(),
            headers: encode(&message.headers, info, not_before, &origin, &self.group),
        })
    }

    async fn store(&self, parked: Parked) -> Result<(), KafkaError> {
        let record = FutureRecord::to(&self.topic)
            .partition(parked.partition)
            .key(&parked.key)
            .payload(&parked.payload)
            .headers(parked.headers);
        // Returns once the broker acknowledged the record: only then is the delivery safe
        // in the retry topic, and only then may the source position move past it.
        self.producer
            .send(record, Duration::from_secs(30))
            .await
            .map(|_| ())
            .map_err(|(source, _)| KafkaError::Produce { topic: self.topic.clone(), source })
    }

    fn take_found(&self) -> Vec<FoundAway> {
        self.found.take()
    }

    fn can_fetch_again(&self, coords: &Coords) -> bool {
        self.record_of(coords).is_some()
    }

    fn fetch_again(&self, coords: &Coords) {
        if let Some(record) = self.record_of(coords) {
            // The thread is gone only at shutdown; the record is then read at the next start.
            let _ = self.refetch.send((record.partition, record.offset));
        }
    }
}

/// Retry records read and waiting until due, earliest first (then by partition and offset,
/// so records due at the same time keep their order).
pub struct Waiting<T> {
    items: BTreeMap<(i64, i32, i64), T>,
}

impl<T> Default for Waiting<T> {
    fn default() -> Self {
        Waiting { items: BTreeMap::new() }
    }
}

impl<T> Waiting<T> {
    /// Holds `item` until `due_ms`.
    pub fn insert(&mut self, due_ms: i64, partition: i32, offset: i64, item: T) {
        self.items.insert((due_ms, partition, offset), item);
    }

    /// Takes every item due at `now_ms`, in order.
    pub fn take_due(&mut self, now_ms: i64) -> Vec<T> {
        let later = self.items.split_off(&(now_ms + 1, i32::MIN, i64::MIN));
        std::mem::replace(&mut self.items, later).into_values().collect()
    }

    /// Takes out the items of `partitions` (revoked), for the caller to drop outside its lock.
    pub fn drop_partitions(&mut self, partitions: &[i32]) -> Vec<T> {
        let keys: Vec<_> = self.items.keys().filter(|(_, p, _)| partitions.contains(p)).copied().collect();
        keys.into_iter().filter_map(|k| self.items.remove(&k)).collect()
    }

    /// Takes out everything (shutdown).
    pub fn clear(&mut self) -> Vec<T> {
        std::mem::take(&mut self.items).into_values().collect()
    }

    /// How many are waiting.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether none is waiting.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// Makes sure the retry topic exists with a partition per source partition; returns how
/// many partitions it has. Creating or growing it needs the rights to; when that fails,
/// source partitions without a retry partition keep their retries in process.
pub fn ensure_topic<C: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(
    consumer: &C,
    admin: &ClientConfig,
    topic: &str,
    needed: i32,
) -> Result<i32, KafkaError> {
    let err = |message: String| KafkaError::RetryTopic { topic: topic.to_string(), message };
    let existing = partition_count(consumer, topic)?;
    if existing >= needed {
        return Ok(existing);
    }
    let admin: AdminClient<Logging> = admin.create_with_context(Logging).map_err(KafkaError::Settings)?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let outcome = if existing == 0 {
        tracing::info!(topic, partitions = needed, "creating the retry topic");
        // Replication -1: the broker's default.
        let new = NewTopic::new(topic, needed, TopicReplication::Fixed(-1));
        futures::executor::block_on(admin.create_topics(&[new], &options))
    } else {
        tracing::info!(topic, from = existing, to = needed, "adding partitions to the retry topic");
        futures::executor::block_on(admin.create_partitions(&[NewPartitions::new(topic, needed as usize)], &options))
    };
    let result = outcome.map_err(|e| e.to_string()).and_then(|mut rs| match rs.pop() {
        Some(Err((_, code))) if code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists => Err(code.to_string()),
        _ => Ok(()),
    });
    if let Err(e) = result {
        if existing == 0 {
            return Err(err(format!("does not exist and could not be created: {e}")));
        }
        tracing::warn!(topic, existing, needed, error = %e, "the retry topic has fewer partitions than the source topics and could not be grown; deliveries of the source partitions beyond it retry in process");
        return Ok(existing);
    }
    // The broker may take a moment to show the new partitions.
    for _ in 0..50 {
        let now = partition_count(consumer, topic)?;
        if now >= needed {
            return Ok(now);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(err(format!("still fewer than {needed} partitions after creating them")))
}

/// Partitions of `topic`; 0 when it does not exist.
pub fn partition_count<C: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(
    consumer: &C,
    topic: &str,
) -> Result<i32, KafkaError> {
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| KafkaError::Metadata { topic: topic.to_string(), message: e.to_string() })?;
    let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Ok(0);
    };
    match t.error() {
        None => Ok(t.partitions().len() as i32),
        Some(code)
            if rdkafka::types::RDKafkaErrorCode::from(code)
                == rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition =>
        {
            Ok(0)
        }
        Some(code) => Err(KafkaError::Metadata {
            topic: topic.to_string(),
            message: rdkafka::types::RDKafkaErrorCode::from(code).to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::Headers;

    #[test]
    fn every_source_partition_has_its_own_retry_partition() {
        let map = RetryMap::new(&[("a".into(), 3), ("b".into(), 2)], 5);
        assert_eq!(map.needed(), 5);
        let all: Vec<_> =
            [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1)].iter().map(|(t, p)| map.partition_for(t, *p)).collect();
        assert_eq!(all, vec![Some(0), Some(1), Some(2), Some(3), Some(4)]);
        assert_eq!(map.partition_for("a", 3), None, "a partition added after start");
        assert_eq!(map.partition_for("c", 0), None);
        let short = RetryMap::new(&[("a".into(), 3), ("b".into(), 2)], 4);
        assert_eq!(short.partition_for("b", 1), None, "the retry topic is too small");
    }

    #[test]
    fn headers_round_trip() {
        let info = RetryInfo {
            trigger: "t".into(),
            action: "a".into(),
            mention: Some(1),
            attempts: 3,
            first_attempt_ms: 1_700_000_000_000,
        };
        let origin = Origin { topic: "changes".into(), partition: 2, offset: 41 };
        let original = vec![("ce_id".to_string(), b"x".to_vec()), ("trace".to_string(), vec![0xff])];
        let owned = encode(&original, &info, 1_700_000_001_000, &origin, "g");
        let headers: Vec<(String, Vec<u8>)> =
            owned.iter().map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec())).collect();
        let back = decode(headers).unwrap();
        assert_eq!(back.headers, original);
        assert_eq!(back.not_before_ms, 1_700_000_001_000);
        assert_eq!(back.origin, origin);
        assert_eq!(back.group.as_deref(), Some("g"));
        assert_eq!((back.info.attempts, back.info.mention, back.info.action.as_str()), (3, Some(1), "a"));
        assert!(decode(vec![("hookbridge-retry".into(), b"{".to_vec())]).is_err());
    }

    #[test]
    fn coordinates_keep_the_origin() {
        let origin = Origin { topic: "changes".into(), partition: 1, offset: 7 };
        let coords = origin.coords("changes.retry", 1, 99);
        assert_eq!(Origin::from_coords(&coords), Some(origin));
        assert_eq!(serde_json::json!(coords)["retry"]["offset"], 99);
    }

    #[test]
    fn waiting_records_come_out_when_due_in_order() {
        let mut w = Waiting::default();
        w.insert(200, 0, 5, "late");
        w.insert(100, 1, 9, "b");
        w.insert(100, 0, 7, "a");
        w.insert(100, 2, 1, "dropped");
        assert_eq!(w.drop_partitions(&[2]), vec!["dropped"]);
        assert_eq!(w.take_due(99), Vec::<&str>::new());
        assert_eq!(w.take_due(100), vec!["a", "b"]);
        assert_eq!(w.len(), 1);
        assert_eq!(w.take_due(1000), vec!["late"]);
        assert!(w.is_empty());
    }
}
