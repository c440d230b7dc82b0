//! What one attempt means: a pure function of (what happened, attempts so far, the retry
//! policy) -> delivered, failed for good, retry in process after a delay, or hand over to
//! the durable retry stage. No clock, no I/O: the jitter draw is a parameter.

use std::borrow::Cow;
use std::time::Duration;

use thiserror::Error;

use crate::metrics::AttemptClass;
use crate::retry::Backoff;
use crate::retry::{next_delay, status_is_retryable};

/// Why a delivery is not delivered (yet). Every variant has a bounded `reason()` label and
/// says whether another attempt could help.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DeliveryError {
    /// The endpoint answered with a status that is not a success.
    #[error("HTTP {status}: {excerpt}")]
    Status {
        /// HTTP status.
        status: u16,
        /// The beginning of the answer.
        excerpt: String,
        /// Where the answer points for a redirect (`Location`), never followed.
        location: Option<String>,
    },
    /// The service said no in its body (an iTop `code`, a Slack error).
    #[error("{detail}")]
    Service {
        /// The service's error label, from a bounded list.
        code: String,
        /// The service's message.
        detail: String,
    },
    /// No answer within the timeout.
    #[error("no answer within the timeout")]
    Timeout,
    /// The connection failed.
    #[error("{0}")]
    Network(String),
    /// The destination is in a refused address range.
    #[error("{0}")]
    DestinationRefused(String),
    /// The rendered request cannot be sent as it is (a header value HTTP cannot carry, a
    /// value that would change which resource the URL names, an invalid URL).
    #[error("{0}")]
    InvalidRequest(String),
    /// The rendered request is over `delivery.max_request_bytes`.
    #[error("{0}")]
    TooLarge(String),
}

impl DeliveryError {
    /// The short stable label used in results, dead letters and metrics.
    pub fn reason(&self) -> Cow<'static, str> {
        match self {
            DeliveryError::Status { status, .. } => Cow::Owned(format!("http_{status}")),
            DeliveryError::Service { code, .. } => Cow::Owned(code.clone()),
            DeliveryError::Timeout => Cow::Borrowed("timeout"),
            DeliveryError::Network(_) => Cow::Borrowed("network"),
            DeliveryError::DestinationRefused(_) => Cow::Borrowed("destination_refused"),
            DeliveryError::InvalidRequest(_) => Cow::Borrowed("invalid_request"),
            DeliveryError::TooLarge(_) => Cow::Borrowed("too_large"),
        }
    }

    /// Whether another attempt could succeed: network errors, timeouts, 408, 429 and 5xx.
    pub fn is_retryable(&self) -> bool {
        match self {
            DeliveryError::Status { status, .. } => status_is_retryable(*status),
            DeliveryError::Timeout | DeliveryError::Network(_) => true,
            DeliveryError::Service { .. }
            | DeliveryError::DestinationRefused(_)
            | DeliveryError::InvalidRequest(_)
            | DeliveryError::TooLarge(_) => false,
        }
    }

    /// The class of an attempt that failed with this error and got no answer.
    pub fn attempt_class(&self) -> AttemptClass {
        match self {
            DeliveryError::Timeout => AttemptClass::Timeout,
            DeliveryError::DestinationRefused(_) => AttemptClass::Refused,
            DeliveryError::InvalidRequest(_) | DeliveryError::TooLarge(_) => AttemptClass::Invalid,
            // Status and service errors come with an answer, classed by its status.
            DeliveryError::Network(_) | DeliveryError::Status { .. } | DeliveryError::Service { .. } => {
                AttemptClass::Network
            }
        }
    }

    /// The detail shown in results: what the error says, plus the redirect target.
    pub fn detail(&self) -> String {
        match self {
            DeliveryError::Status { location: Some(to), .. } => {
                format!(
                    "{self} (a redirect to {to}; redirects are not followed: point the connection at the final URL)"
                )
            }
            _ => self.to_string(),
        }
    }
}

/// What an attempt came to, as the verdict needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempted {
    /// A success answer.
    Success,
    /// Not delivered; `retry_after` is the server's `Retry-After`.
    Error {
        /// What went wrong.
        error: DeliveryError,
        /// The server's `Retry-After`.
        retry_after: Option<Duration>,
    },
}

/// What happens next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The endpoint took it.
    Delivered,
    /// Final: not retryable, or the attempts are used up.
    Failed {
        /// The last error.
        error: DeliveryError,
        /// Whether the attempts ran out (rather than a final answer).
        exhausted: bool,
    },
    /// Try again in process after this delay.
    RetryAfter(Duration),
    /// Hand over to the durable retry stage, due after this delay.
    LongRetry(Duration),
}

/// How many attempts a delivery may make, and where it waits between them.
#[derive(Debug, Clone)]
pub struct Policy<'a> {
    /// Backoff and attempt budget.
    pub retry: &'a Backoff,
    /// Attempts in process (this run) before handing over to the durable stage.
    pub quick_attempts: u32,
    /// Whether a durable retry stage exists.
    pub durable: bool,
}

/// The verdict after attempt number `attempts` (counting every request sent for this action
/// of this event, earlier runs included) of which `in_this_run` were made in this run.
pub fn verdict(policy: &Policy<'_>, attempted: Attempted, attempts: u32, in_this_run: u32, jitter: f64) -> Verdict {
    let (error, retry_after) = match attempted {
        Attempted::Success => return Verdict::Delivered,
        Attempted::Error { error, retry_after } => (error, retry_after),
    };
    if !error.is_retryable() {
        return Verdict::Failed { error, exhausted: false };
    }
    let Some(delay) = next_delay(policy.retry, attempts, retry_after, jitter) else {
        return Verdict::Failed { error, exhausted: true };
    };
    if policy.durable && in_this_run >= policy.quick_attempts {
        Verdict::LongRetry(delay)
    } else {
        Verdict::RetryAfter(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry() -> Backoff {
        Backoff {
            max_attempts: 4,
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            multiplier: 2.0,
            jitter: 0.0,
        }
    }

    fn err(status: u16) -> Attempted {
        Attempted::Error {
            error: DeliveryError::Status { status, excerpt: String::new(), location: None },
            retry_after: None,
        }
    }

    #[test]
    fn outcome_by_attempts_and_stage() {
        let r = retry();
        let durable = Policy { retry: &r, quick_attempts: 2, durable: true };
        let in_process = Policy { retry: &r, quick_attempts: 2, durable: false };
        assert_eq!(verdict(&durable, Attempted::Success, 1, 1, 0.5), Verdict::Delivered);
        assert_eq!(verdict(&durable, err(503), 1, 1, 0.5), Verdict::RetryAfter(Duration::from_secs(1)));
        assert_eq!(verdict(&durable, err(503), 2, 2, 0.5), Verdict::LongRetry(Duration::from_secs(2)));
        assert_eq!(verdict(&in_process, err(503), 2, 2, 0.5), Verdict::RetryAfter(Duration::from_secs(2)));
        // Back from the stage: attempts continue, quick attempts start again.
        assert_eq!(verdict(&durable, err(503), 3, 1, 0.5), Verdict::RetryAfter(Duration::from_secs(4)));
        assert!(matches!(verdict(&durable, err(503), 4, 2, 0.5), Verdict::Failed { exhausted: true, .. }));
        assert!(matches!(verdict(&durable, err(404), 1, 1, 0.5), Verdict::Failed { exhausted: false, .. }));
    }

    #[test]
    fn retry_after_is_honoured_and_capped() {
        let r = retry();
        let p = Policy { retry: &r, quick_attempts: 3, durable: true };
        let limited = Attempted::Error {
            error: DeliveryError::Status { status: 429, excerpt: String::new(), location: None },
            retry_after: Some(Duration::from_secs(7)),
        };
        assert_eq!(verdict(&p, limited, 1, 1, 0.5), Verdict::RetryAfter(Duration::from_secs(7)));
        let far = Attempted::Error { error: DeliveryError::Timeout, retry_after: Some(Duration::from_secs(3600)) };
        assert_eq!(verdict(&p, far, 1, 1, 0.5), Verdict::RetryAfter(Duration::from_secs(60)));
    }

    #[test]
    fn every_error_has_a_label_and_a_retry_rule() {
        let cases = [
            (DeliveryError::Status { status: 500, excerpt: "x".into(), location: None }, "http_500", true),
            (DeliveryError::Status { status: 408, excerpt: "x".into(), location: None }, "http_408", true),
            (
                DeliveryError::Status { status: 301, excerpt: String::new(), location: Some("https://b".into()) },
                "http_301",
                false,
            ),
            (DeliveryError::Status { status: 400, excerpt: "x".into(), location: None }, "http_400", false),
            (DeliveryError::Service { code: "itop_error".into(), detail: "no".into() }, "itop_error", false),
            (DeliveryError::Timeout, "timeout", true),
            (DeliveryError::Network("reset".into()), "network", true),
            (DeliveryError::DestinationRefused("10.0.0.1".into()), "destination_refused", false),
            (DeliveryError::InvalidRequest("bad header".into()), "invalid_request", false),
            (DeliveryError::TooLarge("big".into()), "too_large", false),
        ];
        for (e, label, retryable) in cases {
            assert_eq!(e.reason(), label);
            assert_eq!(e.is_retryable(), retryable, "{label}");
        }
        let redirect =
            DeliveryError::Status { status: 302, excerpt: String::new(), location: Some("https://x/y".into()) };
        assert!(redirect.detail().contains("https://x/y"), "{}", redirect.detail());
    }

    #[test]
    fn unanswered_attempts_are_classed_by_their_error() {
        assert_eq!(DeliveryError::Timeout.attempt_class(), AttemptClass::Timeout);
        assert_eq!(DeliveryError::DestinationRefused("x".into()).attempt_class(), AttemptClass::Refused);
        assert_eq!(DeliveryError::InvalidRequest("x".into()).attempt_class(), AttemptClass::Invalid);
        assert_eq!(DeliveryError::Network("x".into()).attempt_class(), AttemptClass::Network);
    }
}
