//! Checks of the delivery settings and backoff policies, shared by `delivery` and actions.

use super::{DeliveryConfig, Problems, RetryConfig, MAX_CONCURRENCY};

/// Checks a backoff policy (`delivery.retry` or an action's `retry`) at `place`.
pub(crate) fn check_retry(place: &str, r: &RetryConfig, problems: &mut Problems) {
    if r.max_attempts == 0 {
        problems.add(format!("{place}.max_attempts"), "must be at least 1");
    }
    if r.multiplier < 1.0 {
        problems.add(format!("{place}.multiplier"), "must be at least 1");
    }
    if !r.multiplier.is_finite() {
        problems.add(format!("{place}.multiplier"), "must be a finite number");
    }
    if !(0.0..=1.0).contains(&r.jitter) {
        problems.add(format!("{place}.jitter"), "must be between 0 and 1");
    }
    if r.initial > r.max {
        problems.add(format!("{place}.initial"), format!("must not exceed {place}.max"));
    }
    for (field, value) in [("initial", r.initial.0), ("max", r.max.0)] {
        crate::connection::check_duration(&format!("{place}.{field}"), value, problems);
    }
}

pub(super) fn check_delivery(d: &DeliveryConfig, problems: &mut Problems) {
    if d.concurrency == 0 {
        problems.add("delivery.concurrency", "must be at least 1");
    }
    check_retry("delivery.retry", &d.retry, problems);
    if d.quick_attempts == 0 {
        problems.add("delivery.quick_attempts", "must be at least 1");
    }
    for (place, value) in [("delivery.timeout", d.timeout.0), ("delivery.shutdown_timeout", d.shutdown_timeout.0)] {
        crate::connection::check_duration(place, value, problems);
    }
    if d.max_request_bytes.0 == 0 {
        problems.add("delivery.max_request_bytes", "must be at least 1 byte");
    }
    // One semaphore holds every slot; tokio caps a semaphore's permits.
    if d.concurrency > MAX_CONCURRENCY {
        problems.add("delivery.concurrency", format!("must be at most {MAX_CONCURRENCY}"));
    }
    if d.max_event_bytes.0 < 1024 {
        problems.add("delivery.max_event_bytes", "must be at least 1KiB");
    }
}
