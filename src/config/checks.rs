//! Checks of the delivery settings.

use super::{check_retry, Problems, MAX_CONCURRENCY};
use crate::config_file::raw::DeliveryConfig;

pub(super) fn check_delivery(d: &DeliveryConfig, problems: &mut Problems) {
    if d.concurrency == 0 {
        problems.add("delivery.concurrency", "must be at least 1");
    }
    check_retry("delivery.retry", &d.retry, problems);
    if d.quick_attempts == 0 {
        problems.add("delivery.quick_attempts", "must be at least 1");
    }
    for (place, value) in [("delivery.timeout", d.timeout.0), ("delivery.shutdown_timeout", d.shutdown_timeout.0)] {
        crate::config_file::check_duration(place, value, problems);
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
