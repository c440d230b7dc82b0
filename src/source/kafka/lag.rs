//! Source lag per partition, `hookbridge_source_lag{source="kafka", topic, partition}`:
//! the high watermark minus the position that would be committed now, that is the events
//! of the partition that are not final yet (not read, or in flight). Queried from the
//! brokers every few seconds on a thread of its own, so it stays true while partitions are
//! paused and never slows the poll loop.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::offsets::{Tp, Tracker};
use super::rebalance::MainContext;
use crate::metrics;

/// How often the watermarks are queried.
const INTERVAL: Duration = Duration::from_secs(5);
/// How long one query may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The thread that reports lag.
pub struct LagReporter {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LagReporter {
    /// Reports the lag of the partitions `tracker` owns, through `consumer`.
    pub fn start(consumer: Arc<BaseConsumer<MainContext>>, tracker: Arc<Tracker>) -> LagReporter {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("kafka-lag".into())
            .spawn(move || {
                let mut next = Instant::now() + INTERVAL;
                while !stopped.load(Ordering::SeqCst) {
                    if Instant::now() >= next {
                        report(&consumer, &tracker);
                        next = Instant::now() + INTERVAL;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
            .ok();
        LagReporter { stop, thread }
    }

    /// Stops the thread and waits for it, so that it no longer holds the consumer.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for LagReporter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn report(consumer: &BaseConsumer<MainContext>, tracker: &Tracker) {
    let owned = tracker.owned();
    if owned.is_empty() {
        return;
    }
    let mut positions: HashMap<Tp, i64> = tracker.positions(None).into_iter().map(|(tp, p)| (tp, p.next)).collect();
    // Nothing read yet since the assignment: the committed position is where reading starts.
    let unread: Vec<&Tp> = owned.iter().filter(|tp| !positions.contains_key(*tp)).collect();
    if !unread.is_empty() {
        let mut tpl = TopicPartitionList::new();
        for tp in &unread {
            tpl.add_partition(&tp.topic, tp.partition);
        }
        if let Ok(committed) = consumer.committed_offsets(tpl, TIMEOUT) {
            for e in committed.elements() {
                if let Offset::Offset(o) = e.offset() {
                    positions.insert(Tp::new(e.topic(), e.partition()), o);
                }
            }
        }
    }
    let gauge = &metrics::get().source_lag;
    for tp in &owned {
        let (Some(position), Ok((_, high))) =
            (positions.get(tp), consumer.fetch_watermarks(&tp.topic, tp.partition, TIMEOUT))
        else {
            continue;
        };
        // Still owned? A revoke may have removed the gauge while this was querying.
        if tracker.owned().contains(tp) {
            gauge.with_label_values(&["kafka", &tp.topic, &tp.partition.to_string()]).set((high - position).max(0));
        }
    }
}
