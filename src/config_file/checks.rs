//! Checks of raw values that several parts of the config share.

use super::raw::RetryConfig;
use super::Problems;

/// The longest duration accepted anywhere in the config: timers beyond it overflow.
pub const MAX_DURATION: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);

/// A duration that timers and deadlines can hold: not zero, at most a year.
pub fn check_duration(place: &str, d: std::time::Duration, problems: &mut Problems) {
    if d.is_zero() {
        problems.add(place, "must be greater than 0");
    } else if d > MAX_DURATION {
        problems.add(place, format!("must be at most {}", humantime::format_duration(MAX_DURATION)));
    }
}

/// Checks a backoff policy (`delivery.retry` or an action's `retry`) at `place`.
pub fn check_retry(place: &str, r: &RetryConfig, problems: &mut Problems) {
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
        check_duration(&format!("{place}.{field}"), value, problems);
    }
}
