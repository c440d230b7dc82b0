//! Messages a crashed replica left unacknowledged come back in stream order. JetStream
//! redelivers them as their ack deadlines expire, and a replica's in-progress acks move
//! those deadlines: the earlier events it was still working on expire after later ones it
//! had only fetched. The replica starting after the crash must deliver them by stream order.

use std::time::Duration;

use async_nats::jetstream::AckKind;
use futures::StreamExt as _;
use serde_json::json;

use super::bridge::Bridge;
use super::common::{event, wait_until, Receiver};
use super::server::NatsServer;
use super::{config, create_streams, operator_consumer, stats, CONSUMER, HEAVY};

const EVENTS: usize = 20;
const ACK_WAIT: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_messages_of_a_crashed_replica_come_back_in_stream_order() {
    let _heavy = HEAVY.lock().await;
    let nats = NatsServer::start().await;
    let js = nats.jetstream().await;
    create_streams(&js).await;
    let stream = js.get_stream("CHANGES").await.unwrap();
    operator_consumer(&stream, CONSUMER, "changes.>", ACK_WAIT, 0).await;
    for seq in 0..EVENTS {
        let e = event(&format!("e-{seq}"), "1", json!({"object": {"ref": "R-1", "seq": seq}}));
        js.publish("changes.1", serde_json::to_vec(&e).unwrap().into()).await.unwrap().await.unwrap();
    }

    // The replica that crashes: it fetched every event and was working on the first half,
    // whose deadlines its in-progress acks moved past the second half's; then it died.
    let consumer: async_nats::jetstream::consumer::PullConsumer = stream.get_consumer(CONSUMER).await.unwrap();
    let mut batch = consumer.fetch().max_messages(EVENTS).messages().await.unwrap();
    let mut held = Vec::new();
    while let Some(m) = batch.next().await {
        held.push(m.unwrap());
    }
    assert_eq!(held.len(), EVENTS);
    tokio::time::sleep(ACK_WAIT / 2).await;
    for m in &held[..EVENTS / 2] {
        m.ack_with(AckKind::Progress).await.unwrap();
    }
    drop(held);

    let rx = Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let mut bridge = Bridge::start(dir.path(), "after-crash", &config(&nats.url(), &rx.url("/hook"), json!({})), &[]);
    wait_until("every event delivered", Duration::from_secs(30), || stats(&rx.seen()).unique == EVENTS, String::new)
        .await;
    let seqs: Vec<i64> = rx.seen().iter().map(|h| h.seq).collect();
    let s = stats(&rx.seen());
    assert_eq!(s.late_first, 0, "first deliveries out of stream order: {seqs:?}\n{}", bridge.log());
    assert!(bridge.terminate(Duration::from_secs(20)).await.success(), "{}", bridge.log());
}
