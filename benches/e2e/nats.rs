//! NATS JetStream side: a nats-server of our own (JetStream, temporary store, free port,
//! stopped by pid), the streams a deployment creates, the preload, paced publishing and the
//! checks that results were published and every message acknowledged.

use std::collections::VecDeque;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, context::PublishAckFuture, Context};

use crate::procs::{find_binary, free_port, Proc};
use crate::workload::{event, now_us, GROUP};
use crate::Pace;

/// Subjects of the results and dead letters.
pub const RESULTS: &str = "hookbridge.responses";
pub const DEAD: &str = "hookbridge.dead-letter";
/// Publishes awaiting their JetStream acknowledgement, at most (async-nats lets 5,000 be
/// pending before `publish` waits for one).
const WINDOW: usize = 4096;

/// A running nats-server and a JetStream client of it.
pub struct Nats {
    /// The server process.
    pub server: Proc,
    /// `nats://127.0.0.1:PORT`.
    pub url: String,
    js: Context,
    objects: u64,
}

impl Nats {
    /// Starts nats-server with JetStream in `dir`, waits until it is ready, creates the streams.
    pub async fn start(dir: &Path, objects: u64) -> Nats {
        let binary = find_binary("nats-server", &["/usr/sbin/nats-server"])
            .expect("nats-server not found: scripts/bench.sh installs it (Debian: apt-get install nats-server)");
        let port = free_port();
        let log = dir.join("nats-server.log");
        let mut cmd = Command::new(binary);
        cmd.args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"]).arg(dir.join("jetstream"));
        let mut server = Proc::spawn("nats-server", cmd, &log);
        // Ready when the log says so: JetStream is up only after its store is recovered.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !std::fs::read_to_string(&log).unwrap_or_default().contains("Server is ready") {
            assert!(server.exited().is_none(), "nats-server exited:\n{}", server.log_tail(20));
            assert!(Instant::now() < deadline, "nats-server not ready after 20 s:\n{}", server.log_tail(20));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let url = format!("nats://127.0.0.1:{port}");
        let client = async_nats::connect(&url).await.expect("connect to nats-server");
        let js = jetstream::new(client);
        for (name, subject) in [("CHANGES", "changes.>"), ("RESULTS", RESULTS), ("DEAD", DEAD)] {
            js.create_stream(jetstream::stream::Config {
                name: name.into(),
                subjects: vec![subject.into()],
                ..Default::default()
            })
            .await
            .expect("create stream");
        }
        Nats { server, url, js, objects }
    }

    fn subject(object: u64) -> String {
        // Four subject buckets, as four partitions on Kafka.
        format!("changes.p{}", object % 4)
    }

    /// Publishes events `0..n` (event `i` for object `i % objects`), each acknowledged by the
    /// stream before this returns.
    pub async fn preload(&self, n: u64) {
        let mut acks: VecDeque<PublishAckFuture> = VecDeque::with_capacity(WINDOW);
        for seq in 0..n {
            let object = seq % self.objects;
            let ack = self
                .js
                .publish(Self::subject(object), event(seq, object, now_us()).into())
                .await
                .expect("publish an event");
            acks.push_back(ack);
            if acks.len() >= WINDOW {
                acks.pop_front().expect("not empty").await.expect("the stream stores the event");
            }
        }
        for ack in acks {
            ack.await.expect("the stream stores the event");
        }
    }

    /// Publishes events from `first` on at `pace`; returns how many.
    pub async fn paced(&self, first: u64, pace: Pace) -> u64 {
        // The JetStream context lets 5,000 acknowledgements be pending, then makes `publish`
        // wait: acknowledgements are collected as they come, in a window below that.
        let mut acks: VecDeque<PublishAckFuture> = VecDeque::new();
        let mut sent = 0;
        let mut tick = tokio::time::interval(Duration::from_millis(2));
        while sent < pace.total() {
            tick.tick().await;
            while sent < pace.due() {
                let seq = first + sent;
                let object = seq % self.objects;
                acks.push_back(
                    self.js
                        .publish(Self::subject(object), event(seq, object, now_us()).into())
                        .await
                        .expect("publish an event"),
                );
                sent += 1;
                if acks.len() >= WINDOW {
                    acks.pop_front().expect("not empty").await.expect("the stream stores the event");
                }
            }
        }
        for ack in acks {
            ack.await.expect("the stream stores the event");
        }
        sent
    }

    async fn messages(&self, stream: &str) -> u64 {
        let s = self.js.get_stream(stream).await.expect("stream");
        s.get_info().await.expect("stream info").state.messages
    }

    /// Results published on the results subject.
    pub async fn results(&self) -> u64 {
        self.messages("RESULTS").await
    }

    /// Dead letters published.
    pub async fn dead_letters(&self) -> u64 {
        self.messages("DEAD").await
    }

    /// Messages of the source not yet acknowledged (pending + awaiting an ack).
    pub async fn unsettled(&self) -> u64 {
        let stream = self.js.get_stream("CHANGES").await.expect("stream");
        match stream.consumer_info(GROUP).await {
            Ok(info) => info.num_pending + info.num_ack_pending as u64,
            Err(_) => u64::MAX,
        }
    }
}
