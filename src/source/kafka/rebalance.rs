//! Rebalances, as the consumer group decides them, and the retry partitions that follow the
//! source partitions. When partitions are taken away, the replica stops taking their work,
//! lets what is in flight settle within `delivery.shutdown_timeout`, commits the positions
//! that are final, and gives up their retry partitions too; when partitions are given, it
//! starts tracking them under a new generation and starts reading their retry partitions
//! (each after a catch-up, [`super::replay`]).
//!
//! The callbacks run on the consumer thread, inside `poll`: blocking there is what makes the
//! group wait for the commit before the partitions move to another replica.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaResult;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientContext;

use super::client;
use super::commit::{commit_now, Answers};
use super::offsets::Tp;
use super::progress::Progress;
use super::replay::{self, ReplayFilter};
use super::shared::Shared;
use crate::metrics;

/// How long a query for committed offsets or watermarks may take while taking partitions.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Context of the source's group consumer.
pub struct MainContext {
    pub(crate) shared: Arc<Shared>,
    pub(crate) retry: Arc<BaseConsumer<RetryContext>>,
}

/// Context of the retry-topic consumer (assigned by hand: no rebalances of its own).
pub struct RetryContext {
    pub(crate) answers: Arc<Answers>,
}

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
    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        self.answers.record_commit("retry", &result, offsets);
    }
}

impl ConsumerContext for MainContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            self.revoke(consumer, tpl);
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => self.assign(consumer, tpl),
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::warn!(error = %e, "kafka rebalance failed; the group will try again"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        self.shared.main_answers.record_commit("source", &result, offsets);
    }
}

impl MainContext {
    fn assign(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let s = &self.shared;
        let tps = tps_of(tpl);
        if tps.is_empty() {
            return;
        }
        for tp in &tps {
            s.main.assign(tp.clone());
        }
        // A partition paused by flow control under an earlier assignment stays paused in
        // librdkafka; flow control starts each assignment unpaused.
        if let Err(e) = consumer.resume(tpl) {
            tracing::warn!(error = %e, "cannot resume newly assigned partitions");
        }
        // Reading starts at the committed offsets; what the commits knew was final past them
        // is skipped.
        let committed = committed(consumer, &tps);
        for (tp, (_, progress)) in &committed {
            if let Some(p) = progress {
                s.main.resume(tp, p.clone());
            }
        }
        let replayed = replayed_from(consumer, &committed);
        let rtps = link(s, &self.retry, &tps, &replayed);
        s.set_ready();
        tracing::info!(partitions = %names(&tps), retry_partitions = %names(&rtps), "kafka partitions assigned");
    }

    fn revoke(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let s = &self.shared;
        let tps = tps_of(tpl);
        if tps.is_empty() {
            return;
        }
        let rtps = linked(s, &tps);
        // No new work from these partitions: messages read but not yet handed over are
        // dropped by the forwarder, retry records waiting to be due are dropped here. Their
        // new owner reads them again from the committed position.
        s.main.begin_revoke(&tps);
        stop_reading(s, &rtps);
        let lost = consumer.assignment_lost();
        let mut not_final = 0;
        if !lost {
            // Let what is in flight finish, within the drain deadline, so that the new
            // owner starts where this replica stopped instead of replaying.
            let deadline = s.drain_deadline(Instant::now());
            not_final = s.main.wait_settled(Some(&tps), deadline) + s.retry.wait_settled(Some(&rtps), deadline);
            // An asynchronous commit still in flight cannot be waited for here (its answer
            // is served by the poll this callback runs in). Should librdkafka send it again
            // after this one, the next owner reads some final events again: duplicates,
            // never a loss.
            commit_now(consumer, &s.main, &tps, "source", deadline + Duration::from_secs(2));
            commit_now(&*self.retry, &s.retry, &rtps, "retry", deadline + Duration::from_secs(2));
        }
        // From here on, outcomes of these partitions' messages are ignored: the partitions
        // belong to someone else, who will deliver what was not final.
        s.main.remove(&tps);
        forget(s, &self.retry, &tps, &rtps);
        let lag = &metrics::get().source_lag;
        for tp in &tps {
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

/// The committed offsets of `tps` that have one, with what each commit knew was final past
/// it.
pub(crate) fn committed<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    tps: &[Tp],
) -> HashMap<Tp, (i64, Option<Progress>)> {
    let mut tpl = TopicPartitionList::new();
    for tp in tps {
        tpl.add_partition(&tp.topic, tp.partition);
    }
    match consumer.committed_offsets(tpl, QUERY_TIMEOUT) {
        Ok(committed) => committed
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((Tp::new(e.topic(), e.partition()), (o, Progress::decode(o, e.metadata())))),
                _ => None,
            })
            .collect(),
        Err(e) => {
            tracing::debug!(error = %e, "committed offsets unknown; every message from the start position is delivered");
            HashMap::new()
        }
    }
}

/// Of the `committed` offsets, those reading really starts from: still in the partition (one
/// that retention removed makes librdkafka start elsewhere, and then nothing is known to be
/// replayed).
pub(crate) fn replayed_from<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    committed: &HashMap<Tp, (i64, Option<Progress>)>,
) -> HashMap<Tp, i64> {
    committed
        .iter()
        .filter(|(tp, (o, _))| {
            consumer
                .fetch_watermarks(&tp.topic, tp.partition, QUERY_TIMEOUT)
                .is_ok_and(|(low, high)| low <= *o && *o <= high)
        })
        .map(|(tp, (o, _))| (tp.clone(), *o))
        .collect()
}

/// Starts reading the retry partitions of the source partitions `tps` (the layout's; those it
/// does not know yet are left for the next layout refresh). `replayed` are the committed
/// positions the source partitions are read from, when they have just been taken: records
/// of the retry partitions for messages from there on are delivered by that replay.
/// Returns the retry partitions taken.
pub(crate) fn link(s: &Shared, retry: &BaseConsumer<RetryContext>, tps: &[Tp], replayed: &HashMap<Tp, i64>) -> Vec<Tp> {
    let Some(map) = s.map.get() else {
        s.mark_layout_stale();
        return Vec::new();
    };
    let mut wanted = Vec::new();
    {
        let links = s.lock_links();
        for tp in tps {
            match map.partition_for(&tp.topic, tp.partition) {
                Some(r) if links.get(tp) == Some(&r) => {}
                // Still read for another source partition under an earlier layout: the
                // reconciliation after the layout refresh gives it up first.
                Some(r) if links.values().any(|x| *x == r) => s.mark_layout_stale(),
                Some(r) => wanted.push((tp.clone(), r)),
                None => s.mark_layout_stale(),
            }
        }
    }
    let rtps: Vec<Tp> = wanted.iter().map(|(_, r)| Tp::new(s.retry_topic.clone(), *r)).collect();
    let retry_committed = if rtps.is_empty() { HashMap::new() } else { committed(retry, &rtps) };
    let mut tpl = TopicPartitionList::new();
    let mut taken = Vec::new();
    let mut filters: Vec<(i32, i64, ReplayFilter)> = Vec::new();
    for (tp, r) in wanted {
        let rtp = Tp::new(s.retry_topic.clone(), r);
        s.retry.assign(rtp.clone());
        if let Some((_, Some(progress))) = retry_committed.get(&rtp) {
            s.retry.resume(&rtp, progress.clone());
        }
        // Records below the end offset were written before the partition was taken: those
        // read again are checked against the source replay and their later copies.
        match retry.fetch_watermarks(&s.retry_topic, r, QUERY_TIMEOUT) {
            Ok((low, end)) => {
                let start = retry_committed.get(&rtp).map_or(low, |(o, _)| *o).max(low);
                if start < end {
                    let source = replayed.get(&tp).map(|from| (tp.clone(), *from));
                    let final_past = retry_committed.get(&rtp).and_then(|(_, p)| p.clone());
                    filters.push((r, start, ReplayFilter::new(end, source, final_past)));
                }
            }
            Err(e) => tracing::debug!(error = %e, partition = r, "retry partition end unknown"),
        }
        // From the position committed under the retry group, or the earliest record.
        let _ = tpl.add_partition_offset(&rtp.topic, rtp.partition, Offset::Stored);
        s.lock_links().insert(tp, r);
        taken.push(rtp);
    }
    if !filters.is_empty() {
        let mut scanned: Vec<(i32, i64, &mut ReplayFilter)> =
            filters.iter_mut().map(|(r, st, f)| (*r, *st, f)).collect();
        replay::scan(&s.scan_settings, &s.retry_topic, &s.group, &mut scanned);
        // Before any message of the source partitions is read (they are read once this
        // returns): the dispatcher parks the lanes of what waits here.
        let found: Vec<_> = filters.iter().flat_map(|(_, _, f)| f.found()).collect();
        if !found.is_empty() {
            tracing::info!(deliveries = found.len(), "deliveries found waiting in the retry partitions taken; newer events of their objects wait behind them");
        }
        s.found.add(found);
        let mut all = s.lock_filters();
        for (r, _, f) in filters {
            all.insert(r, f);
        }
    }
    if tpl.count() > 0 {
        if let Err(e) = retry.incremental_assign(&tpl) {
            tracing::warn!(error = %e, "cannot read the retry partitions of newly assigned partitions");
        }
        // As for source partitions: paused under an earlier assignment, paused still.
        if let Err(e) = retry.resume(&tpl) {
            tracing::warn!(error = %e, "cannot resume newly assigned retry partitions");
        }
    }
    taken
}

/// The retry partitions read for the source partitions `tps`.
pub(crate) fn linked(s: &Shared, tps: &[Tp]) -> Vec<Tp> {
    let links = s.lock_links();
    tps.iter().filter_map(|tp| links.get(tp)).map(|r| Tp::new(s.retry_topic.clone(), *r)).collect()
}

/// Stops taking work from the retry partitions `rtps`: records waiting to be due are
/// dropped (read again by whoever reads the partition next).
pub(crate) fn stop_reading(s: &Shared, rtps: &[Tp]) {
    s.retry.begin_revoke(rtps);
    let numbers: Vec<i32> = rtps.iter().map(|t| t.partition).collect();
    {
        let mut filters = s.lock_filters();
        for r in &numbers {
            filters.remove(r);
        }
    }
    let dropped = s.waiting.lock().unwrap_or_else(|p| p.into_inner()).drop_partitions(&numbers);
    drop(dropped);
}

/// Forgets the retry partitions `rtps` of the source partitions `tps` and stops reading them.
pub(crate) fn forget(s: &Shared, retry: &BaseConsumer<RetryContext>, tps: &[Tp], rtps: &[Tp]) {
    s.retry.remove(rtps);
    {
        let mut links = s.lock_links();
        for tp in tps {
            links.remove(tp);
        }
    }
    if rtps.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for rtp in rtps {
        tpl.add_partition(&rtp.topic, rtp.partition);
    }
    if let Err(e) = retry.incremental_unassign(&tpl) {
        tracing::warn!(error = %e, "cannot stop reading retry partitions");
    }
    let lag = &metrics::get().source_lag;
    for rtp in rtps {
        let _ = lag.remove_label_values(&["kafka", &rtp.topic, &rtp.partition.to_string()]);
    }
}

fn tps_of(tpl: &TopicPartitionList) -> Vec<Tp> {
    tpl.elements().iter().map(|e| Tp::new(e.topic(), e.partition())).collect()
}

/// Partitions as `topic/N,…`, for logs.
pub(crate) fn names(tps: &[Tp]) -> String {
    tps.iter().map(Tp::to_string).collect::<Vec<_>>().join(",")
}
