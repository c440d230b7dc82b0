//! A real Kafka-protocol broker for the tests: tansu with in-memory storage on a free port,
//! killed when dropped, plus the admin, producer and consumer helpers the tests share.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::Message as _;

/// One tansu broker process.
pub struct Broker {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    _log_dir: tempfile::TempDir,
}

/// Where the tansu binary is: on PATH, or where `cargo install` puts it.
fn tansu_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("tansu");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    if let Some(home) = std::env::var_os("HOME") {
        let candidate = PathBuf::from(home).join(".cargo/bin/tansu");
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "the Kafka tests need the tansu broker, found neither on PATH nor at $HOME/.cargo/bin/tansu; \
         install it with scripts/test-deps.sh (cargo install tansu --version 0.6.0 --locked --features dynostore)"
    );
}

impl Broker {
    /// Starts a broker on a free port and waits until it answers.
    pub fn start() -> Broker {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = format!("127.0.0.1:{port}");
        let log_dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(log_dir.path().join("tansu.log")).unwrap();
        let url = format!("tcp://{addr}");
        let child = Command::new(tansu_binary())
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url, "--storage-engine"])
            .arg("memory://tansu/")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("tansu starts");
        let broker = Broker { child, addr, _log_dir: log_dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&broker.addr).is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen on {} within 20 s", broker.addr);
            std::thread::sleep(Duration::from_millis(20));
        }
        broker
    }

    /// A client config pointing at this broker.
    pub fn config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.addr);
        c
    }

    /// Creates topics with `partitions` partitions each.
    pub async fn create_topics(&self, names: &[&str], partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = self.config().create().unwrap();
        let topics: Vec<NewTopic> =
            names.iter().map(|n| NewTopic::new(n, partitions, TopicReplication::Fixed(1))).collect();
        let results = admin.create_topics(&topics, &AdminOptions::new()).await.unwrap();
        for r in results {
            r.unwrap_or_else(|(t, e)| panic!("create topic {t}: {e}"));
        }
    }

    /// An idempotent producer.
    pub fn producer(&self) -> FutureProducer {
        self.config().set("enable.idempotence", "true").set("linger.ms", "5").create().unwrap()
    }

    /// Produces records in order, many in flight at once, each in a batch of its own (tansu
    /// reports high watermarks that are too low when a batch holds several records).
    pub async fn produce_many(&self, topic: &str, records: &[(String, Vec<u8>)]) {
        let producer: FutureProducer = self
            .config()
            .set("enable.idempotence", "true")
            .set("linger.ms", "0")
            .set("batch.num.messages", "1")
            .create()
            .unwrap();
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

    /// Every record of `topic`, read until none came for a second.
    pub fn read_all(&self, topic: &str) -> Vec<Record> {
        let mut reader = self.reader(topic);
        reader.until_idle(Duration::from_secs(1));
        reader.records
    }

    /// The end offset of each partition of `topic` (last offset + 1, 0 when empty), from the
    /// records themselves: tansu's high watermarks are not exact when producers batch.
    pub fn end_offsets(&self, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
        let mut ends: BTreeMap<i32, i64> = (0..partitions).map(|p| (p, 0)).collect();
        for r in self.read_all(topic) {
            let e = ends.entry(r.partition).or_default();
            *e = (*e).max(r.offset + 1);
        }
        ends
    }

    /// The offsets committed by `group` for each partition of `topic` (-1: none).
    pub fn committed(&self, group: &str, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
        let consumer: BaseConsumer = self.config().set("group.id", group).create().unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(topic, p);
        }
        let committed = consumer.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
        committed
            .elements()
            .iter()
            .map(|e| {
                let c = match e.offset() {
                    Offset::Offset(o) => o,
                    _ => -1,
                };
                (e.partition(), c)
            })
            .collect()
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
            Some(Err(e)) => panic!("reading: {e}"),
            None => false,
        }
    }

    /// Reads until no record came for `idle`.
    pub fn until_idle(&mut self, idle: Duration) {
        let mut last = Instant::now();
        while last.elapsed() < idle {
            if self.poll(Duration::from_millis(100)) {
                last = Instant::now();
            }
        }
    }

    /// Reads until `cond(records)` holds, or panics after `limit`.
    pub async fn until(&mut self, what: &str, limit: Duration, cond: impl Fn(&[Record]) -> bool) {
        let deadline = Instant::now() + limit;
        while !cond(&self.records) {
            assert!(
                Instant::now() < deadline,
                "timed out after {limit:?} waiting for {what}; read {:#?}",
                self.records
            );
            if !self.poll(Duration::ZERO) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
