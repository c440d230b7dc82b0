//! Kafka side: librdkafka's mock cluster, hosted in this process (it serves fetches from any
//! offset correctly), reached by hookbridge over TCP on loopback; the topics (created on the
//! mock cluster since it has no CreateTopics), the preload keyed by object, paced producing
//! and the checks that results were published and every offset committed.
//!
//! The mock answers a fetch with one record batch per partition, where a broker fills the
//! fetch up to `max.partition.fetch.bytes`: a consumer of 4 partitions then reads about 3,500
//! records a second here whatever it does with them, so the topics have 16 partitions by
//! default (`--kafka-partitions`; BENCHMARKS.md shows both).
//!
//! The mock cluster keeps at most 5 MiB of record batches per partition and silently drops
//! the oldest beyond that (a fixed limit of librdkafka's mock, rdkafka_mock.c). So events
//! are produced LZ4-compressed in large batches, as many producers do: 200,000 events of
//! 1 KiB take about 2.5 MiB per partition then; the preload checks that nothing was dropped.
//! Results are counted by end offsets, which dropping old batches does not change.

use std::collections::VecDeque;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::workload::{event, now_us, object_key, GROUP};
use crate::Pace;

/// Records awaiting their acknowledgement, at most, while preloading.
const WINDOW: usize = 20_000;
const TIMEOUT: Duration = Duration::from_secs(10);

/// The mock cluster and producers to it.
pub struct Kafka {
    /// Kept for as long as the benchmark needs the broker: dropping it stops the cluster.
    _cluster: MockCluster<'static, DefaultProducerContext>,
    /// Bootstrap servers of the mock cluster.
    pub brokers: String,
    objects: u64,
    /// Partitions of every topic.
    partitions: i32,
    /// The producer of the latency phase, connected (and its idempotent producer id taken)
    /// during the preload, so that its first records do not wait for that.
    pacer: FutureProducer,
}

impl Kafka {
    /// Starts a one-broker mock cluster with the source, retry, results and dead-letter topics.
    pub fn start(objects: u64, partitions: i32) -> Kafka {
        let cluster = MockCluster::new(1).expect("a mock cluster");
        for topic in ["changes", "changes.retry", "responses", "dead-letter", "warm-up"] {
            cluster.create_topic(topic, partitions, 1).expect("create topic");
        }
        let brokers = cluster.bootstrap_servers();
        let pacer = producer(&brokers, "0");
        Kafka { _cluster: cluster, brokers, objects, partitions, pacer }
    }

    fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        c
    }

    /// Queues one record, waiting while the producer's queue is full.
    async fn send(producer: &FutureProducer, seq: u64, object: u64) -> DeliveryFuture {
        let key = object_key(object);
        let payload = event(seq, object, now_us());
        loop {
            match producer.send_result(FutureRecord::to("changes").key(&key).payload(&payload)) {
                Ok(delivery) => return delivery,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(5)).await
                }
                Err((e, _)) => panic!("produce: {e}"),
            }
        }
    }

    /// Produces events `0..n` keyed by object, each acknowledged before this returns.
    pub async fn preload(&self, n: u64) {
        let producer = producer(&self.brokers, "100");
        let mut acks: VecDeque<DeliveryFuture> = VecDeque::with_capacity(WINDOW);
        for seq in 0..n {
            acks.push_back(Self::send(&producer, seq, seq % self.objects).await);
            if acks.len() >= WINDOW {
                let ack = acks.pop_front().expect("not empty").await.expect("delivery report");
                ack.map_err(|(e, _)| e).expect("the broker stores the event");
            }
        }
        for ack in acks {
            ack.await.expect("delivery report").map_err(|(e, _)| e).expect("the broker stores the event");
        }
        let warm_up = FutureRecord::<str, str>::to("warm-up").payload("{}");
        self.pacer.send(warm_up, TIMEOUT).await.map_err(|(e, _)| e).expect("the pacing producer is connected");
        let c = self.reader("hookbridge-bench-reader");
        for p in 0..self.partitions {
            let (low, high) = c.fetch_watermarks("changes", p, TIMEOUT).expect("watermarks");
            assert_eq!(
                low, 0,
                "the mock cluster dropped the first {low} of {high} records of changes/{p} (it keeps 5 MiB per \
                 partition): lower --events"
            );
        }
    }

    /// Produces events from `first` on at `pace` (no linger: the publish time is the send
    /// time); returns how many.
    pub async fn paced(&self, first: u64, pace: Pace) -> u64 {
        let producer = &self.pacer;
        let mut acks = Vec::new();
        let mut sent = 0;
        let mut tick = tokio::time::interval(Duration::from_millis(2));
        while sent < pace.total() {
            tick.tick().await;
            while sent < pace.due() {
                let seq = first + sent;
                acks.push(Self::send(producer, seq, seq % self.objects).await);
                sent += 1;
            }
        }
        for ack in acks {
            ack.await.expect("delivery report").map_err(|(e, _)| e).expect("the broker stores the event");
        }
        sent
    }

    fn reader(&self, group: &str) -> BaseConsumer {
        self.client().set("group.id", group).create().expect("a consumer")
    }

    fn end_offsets(&self, topic: &str) -> Vec<i64> {
        let c = self.reader("hookbridge-bench-reader");
        (0..self.partitions).map(|p| c.fetch_watermarks(topic, p, TIMEOUT).expect("watermarks").1).collect()
    }

    /// Results published on the results topic.
    pub fn results(&self) -> u64 {
        self.end_offsets("responses").iter().sum::<i64>() as u64
    }

    /// Dead letters published.
    pub fn dead_letters(&self) -> u64 {
        self.end_offsets("dead-letter").iter().sum::<i64>() as u64
    }

    /// Records of the source topic after the group's committed offsets.
    pub fn unsettled(&self) -> u64 {
        let ends = self.end_offsets("changes");
        let mut tpl = TopicPartitionList::new();
        for p in 0..self.partitions {
            tpl.add_partition("changes", p);
        }
        let committed = self.reader(GROUP).committed_offsets(tpl, TIMEOUT).expect("committed offsets");
        committed
            .elements()
            .iter()
            .map(|e| {
                let at = match e.offset() {
                    Offset::Offset(o) => o,
                    _ => 0,
                };
                (ends[e.partition() as usize] - at).max(0) as u64
            })
            .sum()
    }
}

/// An idempotent producer of LZ4-compressed batches.
fn producer(brokers: &str, linger_ms: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("compression.type", "lz4")
        .set("linger.ms", linger_ms)
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("a producer")
}
