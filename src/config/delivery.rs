//! `delivery`, compiled: the settings every delivery runs with, as plain durations, byte
//! counts and a [`Backoff`]; the proxy is compiled where the connections are.

use std::time::Duration;

use crate::config_file::raw::DeliveryConfig;
use crate::retry::Backoff;

/// The delivery settings.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Requests in flight at most.
    pub concurrency: usize,
    /// Time limit of one request, unless its connection or action sets another.
    pub timeout: Duration,
    /// Largest request body sent; a larger one is a failed delivery, not sent.
    pub max_request_bytes: u64,
    /// Retries, unless the action sets its own.
    pub retry: Backoff,
    /// Render and report, never send.
    pub dry_run: bool,
    /// Whether requests may go to private and loopback addresses.
    pub allow_private_networks: bool,
    /// How long a stop may take to finish what is in flight.
    pub shutdown_timeout: Duration,
    /// Attempts made in place before a delivery goes to the durable retry stage.
    pub quick_attempts: u32,
    /// Most bytes of a rejected message kept in its dead letter.
    pub max_dead_letter_raw: usize,
    /// Most mentions of one event that fire a mention trigger.
    pub max_mentions: usize,
    /// Largest event read; a larger one is dead-lettered.
    pub max_event_bytes: usize,
}

impl From<&DeliveryConfig> for Delivery {
    fn from(raw: &DeliveryConfig) -> Delivery {
        Delivery {
            concurrency: raw.concurrency,
            timeout: raw.timeout.0,
            max_request_bytes: raw.max_request_bytes.0,
            retry: Backoff::from(&raw.retry),
            dry_run: raw.dry_run,
            allow_private_networks: raw.allow_private_networks,
            shutdown_timeout: raw.shutdown_timeout.0,
            quick_attempts: raw.quick_attempts,
            max_dead_letter_raw: usize::try_from(raw.max_dead_letter_raw.0).unwrap_or(usize::MAX),
            max_mentions: raw.max_mentions,
            max_event_bytes: usize::try_from(raw.max_event_bytes.0).unwrap_or(usize::MAX),
        }
    }
}

impl Default for Delivery {
    fn default() -> Delivery {
        Delivery::from(&DeliveryConfig::default())
    }
}
