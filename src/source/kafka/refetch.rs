//! Retry records read again by reference. When lane parking cannot hold a delivery that came
//! back from the retry topic while an earlier one of its lane is still away, it lets the
//! delivery go unsettled and keeps only where its record is ([`crate::dispatch`], `lanes`).
//! The record stays in the retry topic, its offset stays open (the retry position does not
//! move past it), and at its turn this thread reads it again and hands it to the pipeline as
//! a returning message. So a waiting delivery is written to the retry topic once, however
//! many times the delivery before it fails.
//!
//! A consumer of its own, assigned by hand and committing nothing, reads each asked offset;
//! offsets of one partition close together are read in one pass. A record that cannot be
//! read (its partition moved to another replica, or the broker no longer has it) is left
//! unsettled: the new owner, or the next start, reads it from the committed position.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::Message as _;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use super::offsets::{Ticket, Tp};
use super::poller::{as_message, headers_of};
use super::retry;
use super::shared::{Handover, Shared};
use crate::source::Message;

/// Asked offsets of a partition further apart than this are read in separate passes
/// (assigned again at the next one) rather than by reading the records between them.
const GAP: i64 = 256;
/// How long one pass may take before what it did not find is left unsettled.
const PASS_LIMIT: Duration = Duration::from_secs(10);
/// How often the thread looks at the shutdown signal while nothing is asked.
const IDLE_WAIT: Duration = Duration::from_millis(200);

/// Reads the records asked on `requests` (retry partition, offset) until shutdown, handing
/// them to the forwarder `fwd`.
pub(crate) fn run(
    shared: Arc<Shared>,
    requests: Receiver<(i32, i64)>,
    fwd: UnboundedSender<Handover>,
    shutdown: CancellationToken,
) {
    let mut consumer = None;
    loop {
        let first = match requests.recv_timeout(IDLE_WAIT) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) if !shutdown.is_cancelled() => continue,
            Err(_) => return,
        };
        if shutdown.is_cancelled() {
            return;
        }
        let mut asked: BTreeMap<i32, BTreeSet<i64>> = BTreeMap::new();
        for (partition, offset) in std::iter::once(first).chain(requests.try_iter()) {
            asked.entry(partition).or_default().insert(offset);
        }
        if consumer.is_none() {
            consumer = open(&shared);
        }
        for (partition, offsets) in asked {
            let tp = Tp::new(shared.retry_topic.clone(), partition);
            // Taken back before reading, so that a message is never handed over twice; those
            // not found are dropped unsettled again below.
            let wanted: BTreeMap<i64, (u64, Ticket)> =
                offsets.into_iter().filter_map(|o| shared.retry.read_again(&tp, o).map(|t| (o, t))).collect();
            match &consumer {
                Some(c) if !wanted.is_empty() => read_partition(c, &shared, &tp, wanted, &fwd, &shutdown),
                _ => {}
            }
        }
    }
}

fn open(shared: &Shared) -> Option<BaseConsumer> {
    let mut settings = shared.scan_settings.clone();
    settings.set("enable.partition.eof", "true").set("enable.auto.commit", "false");
    settings
        .create()
        .map_err(|e| tracing::warn!(error = %e, "cannot read retry records again; they are read after the next rebalance or start"))
        .ok()
}

/// Reads the `wanted` offsets of `tp`, in passes over runs of offsets close together.
fn read_partition(
    consumer: &BaseConsumer,
    shared: &Shared,
    tp: &Tp,
    mut wanted: BTreeMap<i64, (u64, Ticket)>,
    fwd: &UnboundedSender<Handover>,
    shutdown: &CancellationToken,
) {
    let mut missing = 0usize;
    'passes: while let Some(&start) = wanted.keys().next() {
        let mut tpl = TopicPartitionList::new();
        if tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(start)).is_err()
            || consumer.assign(&tpl).is_err()
        {
            break;
        }
        let deadline = Instant::now() + PASS_LIMIT;
        loop {
            if Instant::now() >= deadline || shutdown.is_cancelled() {
                break 'passes;
            }
            let Some(polled) = consumer.poll(Duration::from_millis(100)) else { continue };
            let m = match polled {
                Ok(m) if m.partition() == tp.partition => m,
                Ok(_) => continue,
                // Past the end: what is still wanted is not there.
                Err(rdkafka::error::KafkaError::PartitionEOF(_)) => {
                    missing += wanted.len();
                    wanted.clear();
                    break 'passes;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "reading retry records again");
                    continue;
                }
            };
            let offset = m.offset();
            // Offsets skipped over are not in the partition any more.
            let gone: Vec<i64> = wanted.range(..offset).map(|(o, _)| *o).collect();
            missing += gone.len();
            for o in gone {
                wanted.remove(&o);
            }
            if let Some((generation, ticket)) = wanted.remove(&offset) {
                let message = returning(&m, ticket);
                let _ =
                    fwd.send(Handover { message, tracker: shared.retry.clone(), tp: tp.clone(), generation, offset });
            }
            match wanted.keys().next() {
                None => break 'passes,
                Some(next) if next - offset > GAP => continue 'passes,
                Some(_) => {}
            }
        }
    }
    let _ = consumer.unassign();
    if missing + wanted.len() > 0 {
        tracing::warn!(
            partition = %tp,
            not_found = missing,
            not_read_in_time = wanted.len(),
            "retry records could not be read again; they stay unsettled and are read after the next rebalance or start"
        );
    }
}

/// A retry record read again, as the pipeline sees a returning message.
fn returning(m: &rdkafka::message::BorrowedMessage<'_>, ticket: Ticket) -> Message {
    match retry::decode(headers_of(m)) {
        Ok(returned) => super::poller::returning(m, returned, ticket),
        // It was read once with these headers; should they not decode now, the pipeline
        // dead-letters it with the reason, as on its first reading.
        Err(e) => as_message(m, ticket, Some(Err(e))),
    }
}
