//! The retry policy as a small pure function of (attempt, answer): wait this long, or give up.

use std::time::{Duration, SystemTime};

use crate::config_file::raw::RetryConfig;

/// Backoff and attempt budget, compiled from a `retry` block (of `delivery` or of an
/// action): plain durations.
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The delay after the first failed attempt.
    pub initial: Duration,
    /// The longest delay, `Retry-After` included.
    pub max: Duration,
    /// Growth of the delay per attempt.
    pub multiplier: f64,
    /// Spread of each delay, as a share of it (0.2: ±20 %).
    pub jitter: f64,
}

impl From<&RetryConfig> for Backoff {
    fn from(raw: &RetryConfig) -> Backoff {
        Backoff {
            max_attempts: raw.max_attempts,
            initial: raw.initial.0,
            max: raw.max.0,
            multiplier: raw.multiplier,
            jitter: raw.jitter,
        }
    }
}

/// Whether an HTTP status is worth retrying: 408, 429 and 5xx are; other 4xx are not.
pub fn status_is_retryable(status: u16) -> bool {
    status == 408 || status == 429 || (500..600).contains(&status)
}

/// The delay before attempt `attempt + 1`, or `None` when `attempt` was the last allowed.
/// `unit` in [0, 1) is the jitter draw, so tests are deterministic.
pub fn next_delay(policy: &Backoff, attempt: u32, retry_after: Option<Duration>, unit: f64) -> Option<Duration> {
    if attempt >= policy.max_attempts {
        return None;
    }
    let cap = policy.max;
    if let Some(server) = retry_after {
        // The server knows best when it can take the request again; still bounded by `max`.
        return Some(server.min(cap));
    }
    let exp = policy.multiplier.powi(attempt.saturating_sub(1).min(64) as i32);
    let base = (policy.initial.as_secs_f64() * exp).min(cap.as_secs_f64());
    let spread = policy.jitter * (2.0 * unit - 1.0);
    let jittered = (base * (1.0 + spread)).clamp(0.0, cap.as_secs_f64());
    Some(Duration::from_secs_f64(jittered))
}

/// Parses `Retry-After`: delay seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Backoff {
        Backoff {
            max_attempts: 5,
            initial: Duration::from_secs(1),
            max: Duration::from_secs(10),
            multiplier: 2.0,
            jitter: 0.2,
        }
    }

    #[test]
    fn exponential_with_cap_and_give_up() {
        let p = policy();
        let d: Vec<_> = (1..=5).map(|a| next_delay(&p, a, None, 0.5)).collect();
        assert_eq!(d[0], Some(Duration::from_secs(1)));
        assert_eq!(d[1], Some(Duration::from_secs(2)));
        assert_eq!(d[2], Some(Duration::from_secs(4)));
        assert_eq!(d[3], Some(Duration::from_secs(8)));
        assert_eq!(d[4], None);
        let capped = next_delay(&Backoff { max_attempts: 50, ..p.clone() }, 20, None, 0.5);
        assert_eq!(capped, Some(Duration::from_secs(10)));
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let p = policy();
        let low = next_delay(&p, 3, None, 0.0).unwrap().as_secs_f64();
        let high = next_delay(&p, 3, None, 0.999_999).unwrap().as_secs_f64();
        assert!((3.2..=3.21).contains(&low), "{low}");
        assert!((4.79..=4.8).contains(&high), "{high}");
    }

    #[test]
    fn retry_after_wins_within_the_cap() {
        let p = policy();
        assert_eq!(next_delay(&p, 1, Some(Duration::from_secs(3)), 0.5), Some(Duration::from_secs(3)));
        assert_eq!(next_delay(&p, 1, Some(Duration::from_secs(3600)), 0.5), Some(Duration::from_secs(10)));
        assert_eq!(next_delay(&p, 5, Some(Duration::from_secs(1)), 0.5), None);
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(parse_retry_after(&date, now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn retryable_statuses() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(status_is_retryable(s), "{s}");
        }
        for s in [200, 301, 400, 401, 403, 404, 410, 422] {
            assert!(!status_is_retryable(s), "{s}");
        }
    }
}
