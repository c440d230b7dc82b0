//! The Kafka broker of the tests: librdkafka's own mock cluster, hosted in the test process
//! and listening on loopback ports, so that `hookbridge run` processes started by a test
//! reach it over TCP like a real cluster (and can be killed without touching it). It serves
//! fetches from any offset and keeps exact watermarks (checked in `broker_checks`), and it
//! injects faults: brokers down, errors on given requests, coordinator moves, slow answers.
//!
//! The mock has no CreateTopics: topics are created here with [`Broker::create_topics`]
//! (a topic a producer writes to first is created with 4 partitions).
//!
//! Also the producer and reader helpers the tests share.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::mocking::{MockCluster, MockCoordinator};
use rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::Message as _;

/// Brokers in the mock cluster: more than one, so that a coordinator can move and one broker
/// can go down while others serve.
pub const BROKERS: i32 = 3;

/// One mock cluster, destroyed when dropped.
pub struct Broker {
    cluster: MockCluster<'static, DefaultProducerContext>,
    /// The bootstrap servers, `127.0.0.1:P1,127.0.0.1:P2,…`.
    pub addr: String,
}

impl Broker {
    /// Starts a cluster of [`BROKERS`] brokers on free loopback ports.
    pub fn start() -> Broker {
        let cluster = MockCluster::new(BROKERS).expect("the mock cluster starts");
        let addr = cluster.bootstrap_servers();
        Broker { cluster, addr }
    }

    /// A client config pointing at this cluster.
    pub fn config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.addr);
        c
    }

    /// Creates topics with `partitions` partitions each.
    pub fn create_topics(&self, names: &[&str], partitions: i32) {
        for name in names {
            self.cluster.create_topic(name, partitions, 1).unwrap_or_else(|e| panic!("create topic {name}: {e}"));
        }
    }

    /// Takes broker `id` (-1: all) down: connections are closed and refused.
    pub fn down(&self, id: i32) {
        self.cluster.broker_down(id).unwrap();
    }

    /// Lets broker `id` (-1: all) accept connections again.
    pub fn up(&self, id: i32) {
        self.cluster.broker_up(id).unwrap();
    }

    /// The next requests of kind `api` fail with `errors`, one error per request, in order.
    pub fn fail_requests(&self, api: RDKafkaApiKey, errors: &[RDKafkaRespErr]) {
        self.cluster.request_errors(api, errors);
    }

    /// Moves the coordinator of `group` to broker `id`.
    pub fn move_coordinator(&self, group: &str, id: i32) {
        self.cluster.coordinator(MockCoordinator::Group(group.to_string()), id).unwrap();
    }

    /// Delays every answer of broker `id` (-1: all) by `rtt`.
    pub fn round_trip_time(&self, id: i32, rtt: Duration) {
        self.cluster.broker_round_trip_time(id, rtt).unwrap();
    }

    /// An idempotent producer.
    pub fn producer(&self) -> FutureProducer {
        self.config().set("enable.idempotence", "true").set("linger.ms", "5").create().unwrap()
    }

    /// Produces records in order (batched, many in flight at once) and waits for every
    /// acknowledgement.
    pub async fn produce_many(&self, topic: &str, records: &[(String, Vec<u8>)]) {
        let producer: FutureProducer =
            self.config().set("enable.idempotence", "true").set("linger.ms", "20").create().unwrap();
        let sends = records.iter().map(|(key, value)| {
            let record = FutureRecord::to(topic).key(key).payload(value);
            producer.send(record, Duration::from_secs(30))
        });
        for result in futures::future::join_all(sends).await {
            result.map_err(|(e, _)| e).unwrap();
        }
    }

    /// Produces one record and waits for the broker's acknowledgement.
    pub async fn produce(
        &self,
        producer: &FutureProducer,
        topic: &str,
        key: &str,
        value: &[u8],
        headers: &[(&str, &[u8])],
    ) {
        let mut h = OwnedHeaders::new();
        for (k, v) in headers {
            h = h.insert(Header { key: k, value: Some(*v) });
        }
        let record = FutureRecord::to(topic).key(key).payload(value).headers(h);
        producer.send(record, Duration::from_secs(30)).await.map_err(|(e, _)| e).unwrap();
    }

    /// A reader of every partition of `topic` from its first record.
    pub fn reader(&self, topic: &str) -> Reader {
        let consumer: BaseConsumer = self.config().set("group.id", "test-reader").create().unwrap();
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in metadata.topics()[0].partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning).unwrap();
        }
        consumer.assign(&tpl).unwrap();
        Reader { consumer, records: Vec::new() }
    }

    /// Every record of `topic`: read until the end offset of every partition.
    pub async fn read_all(&self, topic: &str) -> Vec<Record> {
        let ends = self.end_offsets(topic);
        let total: i64 = ends.values().sum();
        let mut reader = self.reader(topic);
        reader
            .until(&format!("the {total} records of {topic}"), Duration::from_secs(30), |rs| rs.len() as i64 >= total)
            .await;
        reader.records
    }

    /// The number of partitions of `topic`.
    pub fn partitions(&self, topic: &str) -> i32 {
        let consumer: BaseConsumer = self.config().create().unwrap();
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
        metadata.topics()[0].partitions().len() as i32
    }

    /// The end offset (high watermark) of each partition of `topic`.
    pub fn end_offsets(&self, topic: &str) -> BTreeMap<i32, i64> {
        let consumer: BaseConsumer = self.config().create().unwrap();
        (0..self.partitions(topic))
            .map(|p| (p, consumer.fetch_watermarks(topic, p, Duration::from_secs(10)).unwrap().1))
            .collect()
    }

    /// The first offset still kept (low watermark) of each partition of `topic`: above 0
    /// when the mock's size limit (5 MiB or 100,000 records per partition) deleted records.
    pub fn start_offsets(&self, topic: &str) -> BTreeMap<i32, i64> {
        let consumer: BaseConsumer = self.config().create().unwrap();
        (0..self.partitions(topic))
            .map(|p| (p, consumer.fetch_watermarks(topic, p, Duration::from_secs(10)).unwrap().0))
            .collect()
    }

    /// The offsets committed by `group` for each partition of `topic` (0 when none: like
    /// the end offset of an empty partition, which has nothing to commit).
    pub fn committed(&self, group: &str, topic: &str) -> BTreeMap<i32, i64> {
        let consumer: BaseConsumer = self.config().set("group.id", group).create().unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..self.partitions(topic) {
            tpl.add_partition(topic, p);
        }
        let committed = consumer.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
        committed
            .elements()
            .iter()
            .map(|e| {
                let c = match e.offset() {
                    Offset::Offset(o) => o,
                    _ => 0,
                };
                (e.partition(), c)
            })
            .collect()
    }

    /// Waits until `group`'s committed offsets of `topic` equal its end offsets, and
    /// returns both; the commit of a stopped replica is synchronous, but a test may ask
    /// while a running one commits at its own pace.
    pub async fn committed_to_the_end(
        &self,
        group: &str,
        topic: &str,
        limit: Duration,
    ) -> (BTreeMap<i32, i64>, BTreeMap<i32, i64>) {
        let deadline = Instant::now() + limit;
        loop {
            let (committed, ends) = (self.committed(group, topic), self.end_offsets(topic));
            if committed == ends || Instant::now() >= deadline {
                return (committed, ends);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Reads a topic as records arrive.
pub struct Reader {
    consumer: BaseConsumer,
    pub records: Vec<Record>,
}

impl Reader {
    fn poll(&mut self, wait: Duration) -> bool {
        match self.consumer.poll(wait) {
            Some(Ok(m)) => {
                let headers = m
                    .headers()
                    .map(|h| h.iter().map(|x| (x.key.to_string(), x.value.unwrap_or_default().to_vec())).collect())
                    .unwrap_or_default();
                self.records.push(Record {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                    value: m.payload().unwrap_or_default().to_vec(),
                    headers,
                });
                true
            }
            // Faults injected by a test reach this reader too; it reads on.
            Some(Err(_)) => false,
            None => false,
        }
    }

    /// Reads what is there now, without waiting.
    pub fn drain(&mut self) {
        while self.poll(Duration::ZERO) {}
    }

    /// Reads until `cond(records)` holds, or panics after `limit`.
    pub async fn until(&mut self, what: &str, limit: Duration, cond: impl Fn(&[Record]) -> bool) {
        let deadline = Instant::now() + limit;
        loop {
            // Everything there is first: `cond` may look at every record.
            self.drain();
            if cond(&self.records) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {limit:?} waiting for {what}; read {} records",
                self.records.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// One record read back from a topic.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Record {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.value).unwrap_or(serde_json::Value::Null)
    }
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_slice())
    }
}
