//! Rebalances, as the consumer group decides them. When partitions are taken away, the
//! replica stops taking their work, lets what is in flight settle within
//! `delivery.shutdown_timeout`, commits the positions that are final, and gives up their
//! retry partitions too; when partitions are given, it starts tracking them under a new
//! generation and starts reading their retry partitions.
//!
//! The callbacks run on the consumer thread, inside `poll`: blocking there is what makes the
//! group wait for the commit before the partitions move to another replica.

use std::sync::Arc;
use std::time::Instant;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaResult;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;

use super::client;
use super::offsets::{Tp, Tracker};
use super::source::Shared;
use crate::metrics;

/// Context of the source's group consumer.
pub struct MainContext {
    pub(crate) shared: Arc<Shared>,
    pub(crate) retry: Arc<BaseConsumer<RetryContext>>,
}

/// Context of the retry-topic consumer (assigned by hand: no rebalances of its own).
pub struct RetryContext;

impl ClientContext for MainContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        client::log(level, fac, message);
    }

    fn stats(&self, _: rdkafka::Statistics) {}

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        client::client_error(&error, reason);
    }
}

impl ClientContext for RetryContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        client::log(level, fac, message);
    }

    fn stats(&self, _: rdkafka::Statistics) {}

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        client::client_error(&error, reason);
    }
}

impl ConsumerContext for RetryContext {
    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        commit_outcome("retry", result);
    }
}

impl ConsumerContext for MainContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            self.revoke(consumer, tpl);
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => self.assign(tpl),
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::warn!(error = %e, "kafka rebalance failed; the group will try again"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        commit_outcome("source", result);
    }
}

impl MainContext {
    fn retry_partitions(&self, tps: &[Tp]) -> Vec<Tp> {
        let Some(map) = self.shared.map.get() else {
            return Vec::new();
        };
        tps.iter()
            .filter_map(|tp| map.partition_for(&tp.topic, tp.partition))
            .map(|r| Tp::new(self.shared.retry_topic.clone(), r))
            .collect()
    }

    fn assign(&self, tpl: &TopicPartitionList) {
        let s = &self.shared;
        let tps = tps_of(tpl);
        if tps.is_empty() {
            return;
        }
        let rtps = self.retry_partitions(&tps);
        for tp in &tps {
            s.main.assign(tp.clone());
        }
        let mut rtpl = TopicPartitionList::new();
        for rtp in &rtps {
            s.retry.assign(rtp.clone());
            // From the position committed under the retry group, or the earliest record.
            let _ = rtpl.add_partition_offset(&rtp.topic, rtp.partition, Offset::Stored);
        }
        if rtpl.count() > 0 {
            if let Err(e) = self.retry.incremental_assign(&rtpl) {
                tracing::warn!(error = %e, "cannot read the retry partitions of newly assigned partitions");
            }
        }
        s.set_ready();
        tracing::info!(partitions = %names(&tps), retry_partitions = %names(&rtps), "kafka partitions assigned");
    }

    fn revoke(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let s = &self.shared;
        let tps = tps_of(tpl);
        if tps.is_empty() {
            return;
        }
        let rtps = self.retry_partitions(&tps);
        // No new work from these partitions: messages read but not yet handed over are
        // dropped by the forwarder, retry records waiting to be due are dropped here. Their
        // new owner reads them again from the committed position.
        s.main.begin_revoke(&tps);
        s.retry.begin_revoke(&rtps);
        let retry_numbers: Vec<i32> = rtps.iter().map(|t| t.partition).collect();
        let dropped = s.waiting.lock().unwrap_or_else(|p| p.into_inner()).drop_partitions(&retry_numbers);
        drop(dropped);
        let lost = consumer.assignment_lost();
        let mut not_final = 0;
        if !lost {
            // Let what is in flight finish, within the drain deadline, so that the new
            // owner starts where this replica stopped instead of replaying.
            let deadline = s.drain_deadline(Instant::now());
            not_final = s.main.wait_settled(Some(&tps), deadline) + s.retry.wait_settled(Some(&rtps), deadline);
            commit(consumer, &s.main, &tps, "source");
            commit(&*self.retry, &s.retry, &rtps, "retry");
        }
        // From here on, outcomes of these partitions' messages are ignored: the partitions
        // belong to someone else, who will deliver what was not final.
        s.main.remove(&tps);
        s.retry.remove(&rtps);
        if !rtps.is_empty() {
            let mut rtpl = TopicPartitionList::new();
            for rtp in &rtps {
                rtpl.add_partition(&rtp.topic, rtp.partition);
            }
            if let Err(e) = self.retry.incremental_unassign(&rtpl) {
                tracing::warn!(error = %e, "cannot stop reading revoked retry partitions");
            }
        }
        let lag = &metrics::get().source_lag;
        for tp in tps.iter().chain(&rtps) {
            let _ = lag.remove_label_values(&["kafka", &tp.topic, &tp.partition.to_string()]);
        }
        if lost {
            tracing::warn!(partitions = %names(&tps), "kafka partitions lost (session timed out): their events not final will be delivered again by their new owner");
        } else if not_final > 0 {
            tracing::warn!(partitions = %names(&tps), not_final, "kafka partitions revoked with events not final within delivery.shutdown_timeout: their new owner delivers them again");
        } else {
            tracing::info!(partitions = %names(&tps), retry_partitions = %names(&rtps), "kafka partitions revoked; positions committed");
        }
    }
}

/// Stores and commits the final positions of `tps` now, synchronously.
pub(crate) fn commit<C: ConsumerContext>(consumer: &impl Consumer<C>, tracker: &Tracker, tps: &[Tp], which: &str) {
    let positions = tracker.positions(Some(tps));
    if positions.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for (tp, offset) in &positions {
        let _ = tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*offset));
    }
    // Stored as well: librdkafka commits the stored offsets of partitions it unassigns,
    // after this commit, and an older stored offset would move the position back.
    let _ = consumer.store_offsets(&tpl);
    if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
        tracing::warn!(consumer = which, error = %e, "kafka commit failed; the positions stored will be committed later, or events read again");
    }
}

fn commit_outcome(which: &str, result: KafkaResult<()>) {
    match result {
        Ok(()) => {}
        // Nothing new was stored since the last commit.
        Err(rdkafka::error::KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => {
            tracing::warn!(consumer = which, error = %e, "kafka offset commit failed; it is retried at the next interval")
        }
    }
}

fn tps_of(tpl: &TopicPartitionList) -> Vec<Tp> {
    tpl.elements().iter().map(|e| Tp::new(e.topic(), e.partition())).collect()
}

fn names(tps: &[Tp]) -> String {
    tps.iter().map(Tp::to_string).collect::<Vec<_>>().join(",")
}
