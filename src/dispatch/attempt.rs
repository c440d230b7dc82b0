//! One HTTP attempt: a slot of the connection, its rate limit, a global slot, the request
//! signed and sent with the attempt's timeout, and the answer read up to a limit.
//!
//! Isolation: a connection may hold at most its own share of the global slots
//! (`max_in_flight`, by default an eighth of `delivery.concurrency`), and its slot is taken
//! before the global one, so requests waiting for a stalled endpoint hold at most that share;
//! the rest stays for healthy endpoints.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::Semaphore;

use super::verdict::{Attempted, DeliveryError};
use crate::action::answer_error;
use crate::config::Config;
use crate::metrics::{self, AttemptClass};
use crate::net::{refused_in, Clients};
use crate::output::excerpt;
use crate::request::Request;
use crate::retry::parse_retry_after;

/// Bytes of an answer kept for callbacks; the result shows an excerpt of it.
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// The share of `delivery.concurrency` a connection may hold when it sets no `max_in_flight`.
pub const DEFAULT_CONNECTION_SHARE: usize = 8;

/// The answer to one attempt.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Headers (lower-case names).
    pub headers: Vec<(String, String)>,
    /// Body, up to 1 MiB.
    pub body: Vec<u8>,
}

impl Answer {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

struct ConnectionLimits {
    in_flight: Arc<Semaphore>,
    rate: Option<DefaultDirectRateLimiter>,
}

/// The HTTP side of delivery: clients, global and per-connection limits.
pub struct Sender {
    clients: Clients,
    global: Arc<Semaphore>,
    limits: Vec<ConnectionLimits>,
    default_timeout: Duration,
}

impl Sender {
    /// Clients and limits for every connection of `config`.
    pub fn new(config: &Config, clients: Clients) -> Sender {
        let concurrency = config.delivery.concurrency;
        let share = (concurrency / DEFAULT_CONNECTION_SHARE).max(1);
        let limits = config
            .connections
            .iter()
            .map(|c| ConnectionLimits {
                in_flight: Arc::new(Semaphore::new(c.max_in_flight.unwrap_or(share))),
                // `check` keeps per_second in (0, 1e9] and burst >= 1, so the quota exists.
                rate: c.rate_limit.as_ref().and_then(|rl| {
                    let period = Duration::from_secs_f64(1.0 / rl.per_second);
                    let burst = NonZeroU32::new(rl.burst).unwrap_or(NonZeroU32::MIN);
                    Quota::with_period(period).map(|q| RateLimiter::direct(q.allow_burst(burst)))
                }),
            })
            .collect();
        Sender {
            clients,
            global: Arc::new(Semaphore::new(concurrency)),
            limits,
            default_timeout: config.delivery.timeout,
        }
    }

    /// Sends `request` once through connection `connection` and says what came of it.
    pub async fn attempt(
        &self,
        config: &Config,
        action: usize,
        connection: usize,
        request: &Request,
        url: &reqwest::Url,
    ) -> (Attempted, Option<Answer>) {
        let action = &config.actions[action];
        let conn = &config.connections[connection];
        let limits = &self.limits[connection];
        // The connection's own slot first: waiting on a stalled endpoint must not hold a
        // global slot that other endpoints could use.
        let Ok(_conn_permit) = limits.in_flight.acquire().await else {
            return (network("dispatcher closed"), None);
        };
        if let Some(rate) = &limits.rate {
            rate.until_ready().await;
        }
        let Ok(_permit) = self.global.acquire().await else {
            return (network("dispatcher closed"), None);
        };
        // Stamped per attempt (a late retry must not look stale); the body is shared, not copied.
        let stamp = request.stamp_headers(&conn.signing_keys, chrono::Utc::now().timestamp());
        let method = reqwest::Method::from_bytes(request.method.as_bytes()).unwrap_or(reqwest::Method::POST);
        let timeout = conn.timeout.unwrap_or(self.default_timeout);
        let mut builder = self.clients.get(connection).request(method, url.clone()).timeout(timeout);
        for (k, v) in request.headers.iter().filter(|(k, _)| !stamp.iter().any(|(s, _)| s == k)) {
            builder = builder.header(k.as_str(), v.as_str());
        }
        for (k, v) in &stamp {
            builder = builder.header(*k, v.as_str());
        }
        if !request.body.is_empty() {
            builder = builder.body(request.body.clone());
        }
        let m = metrics::get();
        m.in_flight.inc();
        let result = async {
            let resp = builder.send().await?;
            let status = resp.status().as_u16();
            let headers = resp
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                .collect();
            let body = read_limited(resp, MAX_ANSWER_BYTES).await?;
            Ok::<_, reqwest::Error>(Answer { status, headers, body })
        }
        .await;
        m.in_flight.dec();
        let (attempted, class, answer) = match result {
            Ok(answer) => (judge_answer(action.kind, &answer), AttemptClass::of_status(answer.status), Some(answer)),
            Err(e) => {
                let failure = transport_error(&e);
                let class = failure.attempt_class();
                (error(failure), class, None)
            }
        };
        m.attempts.with_label_values(&[&action.name, class.as_str()]).inc();
        (attempted, answer)
    }
}

/// What a request that got no answer failed on.
fn transport_error(e: &reqwest::Error) -> DeliveryError {
    if e.is_timeout() {
        DeliveryError::Timeout
    } else if e.is_builder() {
        // The request could not even be built (a header value HTTP cannot carry): the same
        // request fails every time, so it is final.
        DeliveryError::InvalidRequest(crate::mask::error_text(e))
    } else {
        match refused_in(e) {
            Some(r) => DeliveryError::DestinationRefused(r.to_string()),
            None => DeliveryError::Network(crate::mask::error_text(e)),
        }
    }
}

/// What an HTTP answer means: success, or an error with the server's `Retry-After`.
pub fn judge_answer(kind: crate::config_file::raw::ActionKind, answer: &Answer) -> Attempted {
    let status = answer.status;
    if let Some(err) = answer_error(kind, status, &answer.body) {
        // The service said no in its body (iTop code != 0, a Slack error code).
        if !crate::retry::status_is_retryable(status) {
            return error(DeliveryError::Service { code: err.reason, detail: err.detail });
        }
    }
    if (200..300).contains(&status) {
        return Attempted::Success;
    }
    let retry_after = answer.header("retry-after").and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
    let location = if (300..400).contains(&status) { answer.header("location").map(crate::mask::url) } else { None };
    Attempted::Error { error: DeliveryError::Status { status, excerpt: excerpt(&answer.body), location }, retry_after }
}

fn error(error: DeliveryError) -> Attempted {
    Attempted::Error { error, retry_after: None }
}

fn network(detail: &str) -> Attempted {
    error(DeliveryError::Network(detail.to_string()))
}

async fn read_limited(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        let room = limit.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= limit {
            break;
        }
    }
    Ok(body)
}
