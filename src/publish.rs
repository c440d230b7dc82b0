//! Publishing the output messages (SPEC §5): delivery results and callback updates on
//! `responses`, dead letters on `dead_letter`, each behind one [`Sink`] whatever the
//! transport. The messages themselves are built in [`crate::output`].
//!
//! A sink that is away for a while (a broker restarting, a full disk) is retried with
//! backoff until it takes the message or shutdown cancels; a sink that refuses a message
//! for good (too large, not authorised, no such topic) is not retried: retrying it would
//! freeze the consumer behind one message.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use thiserror::Error;
use tokio_util::sync::CancellationToken;

use crate::metrics;
use crate::output::DeadLetter;
use crate::sink::{PublishError, Sink};

/// Tries of a message the destination refuses for good: brokers report some passing states
/// with final codes (an ACL being updated, a leader moving under a size check), so a refusal
/// is believed only after a few tries, about three seconds in all.
const PERMANENT_TRIES: u32 = 6;

/// The smallest raw excerpt a dead letter is cut down to before the sink is deemed to refuse
/// it for good.
const MIN_RAW_BYTES: usize = 1024;

/// Why a message was not published.
#[derive(Debug, Error)]
pub enum PublishFailure {
    /// The sink refused it for good; it was logged and counted.
    #[error(transparent)]
    Permanent(PublishError),
    /// Shutdown came while the sink was away: the message was not published.
    #[error("shut down before the destination took the message")]
    Interrupted,
}

/// Publishes results, callback updates and dead letters.
#[derive(Clone)]
pub struct Publisher {
    responses: Arc<dyn Sink>,
    dead_letter: Arc<dyn Sink>,
    max_raw: usize,
}

impl Publisher {
    /// A publisher over two sinks; dead letters carry at most `max_raw` bytes of the original.
    pub fn new(responses: Arc<dyn Sink>, dead_letter: Arc<dyn Sink>, max_raw: usize) -> Publisher {
        Publisher { responses, dead_letter, max_raw }
    }

    /// A delivery result or callback update, keyed by object.
    pub async fn response(
        &self,
        key: &str,
        message: &impl Serialize,
        cancel: &CancellationToken,
    ) -> Result<(), PublishFailure> {
        // A result takes about 400 bytes: one allocation instead of growing from 128.
        let mut payload = Vec::with_capacity(512);
        serde_json::to_writer(&mut payload, message).expect("output messages serialize");
        send(&self.responses, key, &payload, "response", false, cancel).await
    }

    /// A dead letter. When the sink finds it too large, the raw excerpt is cut further (to a
    /// quarter each time) rather than given up: the reason and coordinates matter most.
    pub async fn dead_letter(
        &self,
        key: &str,
        letter: DeadLetter<'_>,
        cancel: &CancellationToken,
    ) -> Result<(), PublishFailure> {
        let mut max_raw = self.max_raw;
        loop {
            let payload = serde_json::to_vec(&letter.message(max_raw)).expect("output messages serialize");
            let shrinkable = max_raw > MIN_RAW_BYTES && letter.raw.len() > MIN_RAW_BYTES / 6;
            match send(&self.dead_letter, key, &payload, "dead_letter", shrinkable, cancel).await {
                Err(PublishFailure::Permanent(PublishError::TooLarge { .. })) if shrinkable => {
                    max_raw /= 4;
                    tracing::info!(max_raw, "dead letter too large for the destination; cutting its raw excerpt");
                }
                Ok(()) => {
                    metrics::get().dead_letters.with_label_values(&[metrics::dead_letter_reason(letter.reason)]).inc();
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Sends until the sink takes the message, it refuses it for good ([`PERMANENT_TRIES`]
/// times; at once for "too large" when the caller can make the message smaller), or `cancel`
/// fires.
async fn send(
    sink: &Arc<dyn Sink>,
    key: &str,
    payload: &[u8],
    kind: &'static str,
    shrinkable: bool,
    cancel: &CancellationToken,
) -> Result<(), PublishFailure> {
    let mut delay = Duration::from_millis(100);
    let mut refusals = 0;
    loop {
        let error = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(PublishFailure::Interrupted),
            r = sink.publish(key, payload) => match r {
                Ok(()) => return Ok(()),
                Err(e) => e,
            },
        };
        metrics::get().publish_errors.with_label_values(&[kind]).inc();
        if error.is_permanent() {
            refusals += 1;
        }
        let smaller_next = shrinkable && matches!(error, PublishError::TooLarge { .. });
        if error.is_permanent() && (refusals >= PERMANENT_TRIES || smaller_next) {
            tracing::error!(kind, reason = error.label(), error = %error, bytes = payload.len(), "the destination refuses this message for good");
            return Err(PublishFailure::Permanent(error));
        }
        tracing::warn!(kind, reason = error.label(), error = %error, retry_in_ms = delay.as_millis() as u64, "publishing failed; retrying");
        tokio::select! {
            _ = cancel.cancelled() => return Err(PublishFailure::Interrupted),
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use std::sync::Mutex;

    /// A sink that fails as told, then records what it takes.
    struct Scripted {
        fail: Mutex<Vec<PublishError>>,
        limit: Option<usize>,
        taken: Mutex<Vec<Vec<u8>>>,
    }

    #[async_trait]
    impl Sink for Scripted {
        async fn publish(&self, _key: &str, payload: &[u8]) -> Result<(), PublishError> {
            if let Some(e) = self.fail.lock().unwrap().pop() {
                return Err(e);
            }
            if let Some(limit) = self.limit {
                if payload.len() > limit {
                    return Err(PublishError::TooLarge { size: payload.len(), source: "max payload".into() });
                }
            }
            self.taken.lock().unwrap().push(payload.to_vec());
            Ok(())
        }
    }

    fn scripted(fail: Vec<PublishError>, limit: Option<usize>) -> Arc<Scripted> {
        Arc::new(Scripted { fail: Mutex::new(fail), limit, taken: Mutex::new(Vec::new()) })
    }

    #[tokio::test(start_paused = true)]
    async fn passing_errors_are_retried_until_taken() {
        let sink = scripted((0..3).map(|_| PublishError::Unavailable("down".into())).collect(), None);
        let p = Publisher::new(sink.clone(), sink.clone(), 1024);
        p.response("k", &serde_json::json!({"a": 1}), &CancellationToken::new()).await.unwrap();
        assert_eq!(sink.taken.lock().unwrap().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_are_tried_a_few_times_only() {
        let refusals = |n| (0..n).map(|_| PublishError::Refused("not authorised".into())).collect();
        let sink = scripted(refusals(PERMANENT_TRIES as usize), None);
        let p = Publisher::new(sink.clone(), sink.clone(), 1024);
        let r = p.response("k", &serde_json::json!({"a": 1}), &CancellationToken::new()).await;
        assert!(matches!(r, Err(PublishFailure::Permanent(PublishError::Refused(_)))), "{r:?}");
        assert!(sink.taken.lock().unwrap().is_empty());
        // A refusal that passes within the tries is not believed.
        let sink = scripted(refusals(PERMANENT_TRIES as usize - 1), None);
        let p = Publisher::new(sink.clone(), sink.clone(), 1024);
        p.response("k", &serde_json::json!({"a": 1}), &CancellationToken::new()).await.unwrap();
        assert_eq!(sink.taken.lock().unwrap().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn cancel_ends_a_sink_that_never_comes_back() {
        let errors: Vec<PublishError> = (0..10_000).map(|_| PublishError::Unavailable("down".into())).collect();
        let sink = scripted(errors, None);
        let p = Publisher::new(sink.clone(), sink.clone(), 1024);
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            stop.cancel();
        });
        let r = p.response("k", &serde_json::json!({"a": 1}), &cancel).await;
        assert!(matches!(r, Err(PublishFailure::Interrupted)), "{r:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_dead_letter_too_large_for_the_sink_is_cut_until_it_fits() {
        let sink = scripted(Vec::new(), Some(64 * 1024));
        let p = Publisher::new(sink.clone(), sink.clone(), 256 * 1024);
        let hostile = vec![1u8; 60 * 1024];
        let source = crate::source::Coords::Nats {
            stream: "S".into(),
            subject: "s".into(),
            sequence: 1,
            delivered: Some(1),
            retry: None,
        };
        let letter = DeadLetter {
            reason: "invalid_json",
            detail: "expected value",
            source: &source,
            raw: &hostile,
            event_id: None,
            trigger: None,
            action: None,
        };
        p.dead_letter("", letter, &CancellationToken::new()).await.unwrap();
        let taken = sink.taken.lock().unwrap();
        let m: serde_json::Value = serde_json::from_slice(&taken[0]).unwrap();
        assert_eq!(m["raw_truncated"], true);
        assert_eq!(m["raw_size"], 60 * 1024);
        assert!(taken[0].len() <= 64 * 1024);
    }
}
