//! Delivery guarantees that depend on the broker's limits: a dead letter larger than the
//! server's `max_payload` must neither freeze the consumer nor block shutdown.

use std::time::{Duration, Instant};

use async_nats::HeaderMap;

use super::bridge::Bridge;
use super::common::{event, wait_until, Receiver};
use super::server::NatsServer;
use super::{config, consumer_counts, create_streams, publish, wait_stream, HEAVY};
use serde_json::json;

#[tokio::test]
async fn a_dead_letter_over_max_payload_neither_freezes_the_consumer_nor_blocks_shutdown() {
    let _heavy = HEAVY.lock().await;
    let conf = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(conf.path(), "max_payload: 65536\n").unwrap();
    let nats = NatsServer::start_with(&["-c", conf.path().to_str().unwrap()]).await;
    let js = nats.jetstream().await;
    create_streams(&js).await;
    // 60 KB of control characters: escaped in JSON (`\u0001` is six bytes) the dead letter
    // would be about 360 KB, far over the 64 KB the server takes.
    let hostile = vec![1u8; 60 * 1024];
    publish(&js, "changes.bad", HeaderMap::new(), hostile.clone()).await;
    let good = 1000;
    for i in 0..good {
        let e = event(&format!("g{i}"), &(i % 50).to_string(), json!({"object": {"ref": format!("R-{i}"), "seq": i}}));
        publish(&js, "changes.good", HeaderMap::new(), serde_json::to_vec(&e).unwrap()).await;
    }
    let rx = Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(&nats.url(), &rx.url("/hook"), json!({"shutdown_timeout": "3s"}));
    let mut bridge = Bridge::start(dir.path(), "payload", &config, &[]);
    wait_until("every good event delivered", Duration::from_secs(60), || rx.seen().len() >= good, String::new).await;
    let letters = wait_stream(&js, "DEAD", 1, Duration::from_secs(20)).await;
    assert_eq!(letters.len(), 1, "{}", bridge.log());
    let letter = &letters[0].1;
    assert_eq!(letter["reason"], "invalid_json");
    assert_eq!(letter["raw_truncated"], true);
    assert_eq!(letter["raw_size"], hostile.len());
    assert!(letter["raw"].as_str().unwrap().bytes().all(|b| b == 1));
    let results = wait_stream(&js, "RESULTS", good, Duration::from_secs(30)).await;
    assert_eq!(results.len(), good);
    assert!(results.iter().all(|(_, r)| r["status"] == "delivered"));
    let asked = Instant::now();
    let status = bridge.terminate(Duration::from_secs(3 + 2)).await;
    assert!(status.success(), "exit {status:?} after {:?}\n{}", asked.elapsed(), bridge.log());
    assert!(asked.elapsed() <= Duration::from_secs(5), "{:?}", asked.elapsed());
    assert_eq!(consumer_counts(&js).await, (0, 0));
}
