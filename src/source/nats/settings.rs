//! The source settings taken from the config, and the two durable consumers they describe:
//! the one on the user's stream and the one on the retry stream.

use std::time::Duration;

use async_nats::jetstream::consumer::pull::Config as PullConfig;
use async_nats::jetstream::consumer::AckPolicy;

use crate::config::NatsInput;

/// `ack_wait` of a consumer the bridge creates. Progress acks go out every third of it.
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);
/// Messages asked for in one pull request, at most.
const MAX_BATCH: usize = 256;

/// The NATS source settings: the compiled `source` block, and what this replica's room and
/// drain are.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Server, stream, consumer, retry stream and subject, credentials.
    pub input: NatsInput,
    /// Messages this replica holds at most (fetched and not settled), events and retry
    /// records together.
    pub max_hold: usize,
    /// How long to wait for held messages to settle after shutdown.
    pub drain: Duration,
}

impl Settings {
    /// The durable consumer reading the retry stream, shared by the replicas.
    pub fn retry_consumer(&self) -> String {
        format!("{}-retry", self.input.consumer)
    }

    /// `max_ack_pending` of a consumer the bridge creates. It caps messages delivered and not
    /// acked across all replicas: a small cap would let a burst of slow deliveries stop the
    /// whole consumer.
    pub fn max_ack_pending(&self) -> i64 {
        (self.max_hold * 16).max(10_000) as i64
    }

    /// Retry records the fetch loop asks for at once, at most: a share of the room, so that
    /// a pull waiting on the retry consumer never keeps the room from the events, nor the
    /// other way round.
    pub(super) fn retry_share(&self) -> usize {
        (self.max_hold / 4).clamp(1, 64)
    }

    /// Events the fetch loop asks for at once, at most: what the retry records leave.
    pub(super) fn events_batch(&self) -> usize {
        MAX_BATCH.min(self.max_hold.saturating_sub(self.retry_share()).max(1))
    }

    /// The main consumer the bridge creates when none exists.
    pub(super) fn consumer_spec(&self) -> ConsumerSpec {
        let mut config = PullConfig {
            durable_name: Some(self.input.consumer.clone()),
            description: Some("hookbridge: object-change events to webhooks".into()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: DEFAULT_ACK_WAIT,
            // Never let the server drop a message after N deliveries: the bridge counts
            // attempts itself and dead-letters when retries are exhausted.
            max_deliver: -1,
            max_ack_pending: self.max_ack_pending(),
            ..Default::default()
        };
        match self.input.subjects.as_slice() {
            [] => {}
            // One filter works on every server version; several need NATS 2.10.
            [one] => config.filter_subject = one.clone(),
            many => config.filter_subjects = many.to_vec(),
        }
        ConsumerSpec {
            stream: self.input.stream.clone(),
            name: self.input.consumer.clone(),
            subjects: self.input.subjects.clone(),
            config,
        }
    }

    /// The retry consumer the bridge creates when none exists.
    pub(super) fn retry_spec(&self) -> ConsumerSpec {
        let config = PullConfig {
            durable_name: Some(self.retry_consumer()),
            description: Some("hookbridge: deliveries waiting for a retry".into()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: DEFAULT_ACK_WAIT,
            max_deliver: -1,
            // Records not yet due wait as NAKed with a delay, and those count as pending: any
            // cap would let a long outage of one endpoint hold back the records of the others.
            max_ack_pending: -1,
            filter_subject: self.input.retry_subject.clone(),
            ..Default::default()
        };
        ConsumerSpec {
            stream: self.input.retry_stream.clone(),
            name: self.retry_consumer(),
            subjects: vec![self.input.retry_subject.clone()],
            config,
        }
    }
}

/// A durable pull consumer the bridge binds, or creates with `config` when missing.
#[derive(Debug, Clone)]
pub(super) struct ConsumerSpec {
    pub(super) stream: String,
    pub(super) name: String,
    /// The filter it must have; empty: any.
    pub(super) subjects: Vec<String>,
    pub(super) config: PullConfig,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config_file::raw::NatsCredentials;

    fn settings(max_hold: usize) -> Settings {
        Settings {
            input: NatsInput {
                url: "nats://127.0.0.1:4222".into(),
                stream: "CHANGES".into(),
                subjects: vec!["changes.>".into()],
                consumer: "bridge".into(),
                retry_stream: "CHANGES_RETRY".into(),
                retry_subject: "hookbridge.retry.bridge".into(),
                credentials: NatsCredentials::default(),
            },
            max_hold,
            drain: Duration::from_secs(1),
        }
    }

    #[test]
    fn events_and_retry_records_share_the_room_without_taking_it_all() {
        for max_hold in [1, 64, 256, 1024, 16_384] {
            let s = settings(max_hold);
            let (events, retries) = (s.events_batch(), s.retry_share());
            assert!(events >= 1 && retries >= 1, "{max_hold}: {events} {retries}");
            // While one loop waits on a pull with its permits, the other can still get some.
            if max_hold > 1 {
                assert!(events + retries <= max_hold, "{max_hold}: {events} + {retries}");
            }
        }
        assert_eq!((settings(256).events_batch(), settings(256).retry_share()), (192, 64));
    }

    #[test]
    fn the_retry_consumer_has_its_own_name_filter_and_no_cap() {
        let spec = settings(256).retry_spec();
        assert_eq!(spec.name, "bridge-retry");
        assert_eq!(spec.stream, "CHANGES_RETRY");
        assert_eq!(spec.config.filter_subject, "hookbridge.retry.bridge");
        assert_eq!(spec.config.ack_policy, AckPolicy::Explicit);
        assert_eq!((spec.config.max_deliver, spec.config.max_ack_pending), (-1, -1));
    }
}
