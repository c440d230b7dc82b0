//! The retry layout while running. librdkafka picks up new partitions of subscribed topics,
//! and new topics matching a subscribed expression, at its metadata refresh
//! (`topic.metadata.refresh.interval.ms`) and assigns them like the others; the consumer
//! thread then learns the new layout, grows the retry topic when it can, and starts reading
//! the new partitions' retry partitions, without a restart.
//!
//! The layout is refreshed when a partition is assigned that it does not know, and every
//! [`REFRESH_EVERY`] (a partition added elsewhere can move retry partitions of this
//! replica's: see [`crate::source::kafka::retry::RetryMap`]). When a source partition's retry partition
//! changes, the old one is given up like a revoked partition (in-flight work settles, the
//! position is committed) and the new one is taken.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;

use super::Poller;
use crate::source::kafka::commit::commit_now;
use crate::source::kafka::offsets::Tp;
use crate::source::kafka::rebalance::{forget, link, names, stop_reading};
use crate::source::kafka::retry::{self, RetryMap};
use crate::source::kafka::KafkaError;

/// How often the layout is checked even when nothing asked for it.
pub const REFRESH_EVERY: Duration = Duration::from_secs(30);
/// The shortest time between two refreshes asked for by assignments.
const REFRESH_MIN: Duration = Duration::from_secs(1);
/// How long a metadata query may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);

/// When the layout was last checked, and which layout the retry topic last failed to grow for.
#[derive(Debug, Default)]
pub struct LayoutState {
    last: Option<Instant>,
    growth_failed_for: Option<Vec<(String, i32)>>,
}

impl Poller {
    /// Learns the subscribed topics and makes sure the retry topic has one partition for
    /// each of their partitions; waits for the brokers until shutdown. Topics that do not
    /// exist yet are read once they appear.
    pub(crate) fn prepare(&mut self) -> Result<Option<RetryMap>, KafkaError> {
        let mut delay = Duration::from_millis(500);
        loop {
            let attempt = self.existing_topics().and_then(|existing| {
                let layout = self.subscription.layout(&existing, &[&self.shared.retry_topic]);
                for (topic, count) in &layout {
                    if *count == 0 {
                        tracing::warn!(topic, "kafka topic does not exist (yet); it is read once it appears");
                    }
                }
                let needed = RetryMap::new(&layout, 0).needed();
                let available = retry::ensure_topic(&*self.main, &self.admin, &self.shared.retry_topic, needed)?;
                Ok(RetryMap::new(&layout, available))
            });
            match attempt {
                Ok(map) => {
                    self.layout.last = Some(Instant::now());
                    return Ok(Some(map));
                }
                // Rights or settings, not a passing state: say so and stop.
                Err(e @ KafkaError::RetryTopic { .. }) | Err(e @ KafkaError::Settings(_)) => return Err(e),
                Err(e) => self.errors.warn(&e.to_string(), "kafka source not ready; retrying"),
            }
            let until = Instant::now() + delay;
            while Instant::now() < until {
                if self.shutdown.is_cancelled() {
                    return Ok(None);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }

    /// The topics of the cluster the subscription may name, with their partition counts:
    /// every topic when it has expressions, else the named ones (absent when missing).
    fn existing_topics(&self) -> Result<BTreeMap<String, i32>, KafkaError> {
        let mut out = BTreeMap::new();
        if self.subscription.has_patterns() {
            let metadata = self
                .main
                .fetch_metadata(None, METADATA_TIMEOUT)
                .map_err(|e| KafkaError::Metadata { topic: "(all)".into(), message: e.to_string() })?;
            for t in metadata.topics() {
                if t.error().is_none() {
                    out.insert(t.name().to_string(), t.partitions().len() as i32);
                }
            }
        }
        for name in self.subscription.names() {
            let n = retry::partition_count(&*self.main, name)?;
            if n > 0 {
                out.insert(name.clone(), n);
            }
        }
        Ok(out)
    }

    /// Refreshes the layout when asked for (at most every [`REFRESH_MIN`]) or every
    /// [`REFRESH_EVERY`].
    pub(crate) fn keep_layout(&mut self, now: Instant) {
        let since = self.layout.last.map_or(Duration::MAX, |l| now.duration_since(l));
        if since < REFRESH_MIN || (since < REFRESH_EVERY && !self.shared.take_layout_stale()) {
            return;
        }
        self.layout.last = Some(now);
        if let Err(e) = self.refresh_layout() {
            self.errors.warn(&e.to_string(), "cannot refresh the kafka retry layout; trying again later");
            self.shared.mark_layout_stale();
        }
    }

    fn refresh_layout(&mut self) -> Result<(), KafkaError> {
        let existing = self.existing_topics()?;
        let layout = self.subscription.layout(&existing, &[&self.shared.retry_topic]);
        let current = self.shared.map.get();
        let needed = RetryMap::new(&layout, 0).needed();
        let known = current.as_ref().is_some_and(|m| m.layout() == layout.as_slice());
        let short = current.as_ref().is_some_and(|m| m.available() < needed);
        if known && (!short || self.layout.growth_failed_for.as_ref() == Some(&layout)) {
            // Nothing new; make sure every owned partition has its retry partition.
            self.reconcile();
            return Ok(());
        }
        let available = match retry::ensure_topic(&*self.main, &self.admin, &self.shared.retry_topic, needed) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "the retry topic cannot hold the new partitions; their deliveries retry in process");
                current.as_ref().map_or(0, |m| m.available())
            }
        };
        self.layout.growth_failed_for = (available < needed).then(|| layout.clone());
        let map = RetryMap::new(&layout, available);
        if let Some(old) = &current {
            let moved: Vec<String> = old
                .layout()
                .iter()
                .flat_map(|(t, n)| (0..*n).map(move |p| (t.clone(), p)))
                .filter(|(t, p)| {
                    let before = old.partition_for(t, *p);
                    before.is_some() && map.partition_for(t, *p) != before
                })
                .map(|(t, p)| format!("{t}/{p}"))
                .collect();
            if !moved.is_empty() {
                tracing::warn!(partitions = %moved.join(","), "kafka partitions were added before these in the retry layout: their retry partitions move; deliveries parked before the move are delivered by the replica that reads their old retry partition");
            }
        }
        tracing::info!(layout = ?map.layout(), retry_partitions = available, "kafka retry layout");
        self.shared.map.set(map);
        self.reconcile();
        Ok(())
    }

    /// Makes the retry partitions read match the layout: each owned source partition reads
    /// its own, and nothing else.
    fn reconcile(&mut self) {
        let Some(map) = self.shared.map.get() else { return };
        let s = self.shared.clone();
        let owned: Vec<Tp> = s.main.owned().into_iter().filter(|tp| s.main.current(tp).is_some()).collect();
        let links: BTreeMap<Tp, i32> = s.lock_links().clone();
        let stale: Vec<(Tp, i32)> = links
            .into_iter()
            .filter(|(tp, r)| !owned.contains(tp) || map.partition_for(&tp.topic, tp.partition) != Some(*r))
            .collect();
        if !stale.is_empty() {
            let tps: Vec<Tp> = stale.iter().map(|(tp, _)| tp.clone()).collect();
            let rtps: Vec<Tp> = stale.iter().map(|(_, r)| Tp::new(s.retry_topic.clone(), *r)).collect();
            stop_reading(&s, &rtps);
            let deadline = s.drain_deadline(Instant::now());
            s.retry.wait_settled(Some(&rtps), deadline);
            commit_now(&*self.retry, &s.retry, &rtps, "retry", deadline + Duration::from_secs(2));
            forget(&s, &self.retry, &tps, &rtps);
            tracing::info!(retry_partitions = %names(&rtps), "retry partitions given up after a layout change");
        }
        let linked: Vec<Tp> = s.lock_links().keys().cloned().collect();
        let missing: Vec<Tp> = owned
            .into_iter()
            .filter(|tp| !linked.contains(tp) && map.partition_for(&tp.topic, tp.partition).is_some())
            .collect();
        if missing.is_empty() {
            return;
        }
        // No committed positions: these partitions have been read here for a while, so
        // their source does not replay from the committed position, and no retry record
        // may be taken for superseded by that replay.
        let taken = link(&s, &self.retry, &missing, &HashMap::new());
        if !taken.is_empty() {
            tracing::info!(partitions = %names(&missing), retry_partitions = %names(&taken), "retry partitions taken after a layout change");
        }
    }
}
