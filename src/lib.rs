//! hookbridge turns object-change events into outgoing webhooks and chat notifications.
//!
//! # Layout
//!
//! An event flows through the modules in this order (ARCHITECTURE.md has the full codemap):
//!
//! 1. `source` reads messages — `source/file.rs` (JSON Lines), `source/kafka/` (consumer
//!    group and retry topic), `source/nats/` (JetStream pull consumers and retry stream) —
//!    and hands each over with its typed coordinates and an acknowledgement that releases
//!    the source position only once every outcome for it is final.
//! 2. `pipeline` is the main loop: it parses the bytes with `event` (plain or CloudEvents; a
//!    message that is not an event becomes a dead letter, never a crash), matches the
//!    compiled triggers with `trigger`, and renders each (trigger, action) pair with
//!    `render::plan` into an exact `request::Request` — through the action's renderer in
//!    `action` (chat markup from `rich_text`), the placeholders of `template` and the
//!    endpoint of `connection`.
//! 3. `dispatch` sends it: concurrency limits, per-connection isolation, per-object order,
//!    retries with backoff (`retry`), `Retry-After`, the durable retry stage of the source;
//!    it builds each delivery result and callback update (`dispatch/report.rs`, `output`).
//! 4. `publish` writes results, callback updates and dead letters through a `sink`
//!    (`sink/file.rs`, `sink/kafka.rs`, `sink/nats.rs`), retrying while a destination is away.
//!
//! Around them: `config` validates and compiles the YAML once at start (the file's raw
//! types, units, secrets and problems are in `config_file`, which depends on nothing); `runtime` wires a
//! config into a running bridge (and the one-shot `send`); `server` serves `/metrics`,
//! `/healthz` and `/readyz`; `metrics` holds every metric; `mask` hides secrets wherever a
//! URL or text is shown; `net` guards destinations (private ranges, DNS pinning, the
//! proxy) and holds the pooled HTTP clients.
//!
//! # Public API
//!
//! Small on purpose: what the `hookbridge` binary needs — load a [`Config`], [`run`] it,
//! [`send_one`] action, [`render_event`], [`parse_event`], the shipped [`schema`]s, the
//! optional OpenTelemetry export ([`telemetry`]) — and the
//! error types whose [`ExitStatus`] decides its [`Exit`] code ([`ConfigError`],
//! [`StartError`], [`SendError`], [`EventError`], and [`SendReport`] for `send`). Everything else is private to the crate; `internals` (hidden from the
//! docs, not a stable API) re-exports what benchmarks and white-box tests drive directly.

mod action;
mod config;
mod config_file;
mod connection;
mod dispatch;
mod event;
mod exit;
mod expr;
mod mask;
mod metrics;
mod net;
mod output;
mod pipeline;
mod publish;
mod render;
mod request;
mod retry;
mod rich_text;
mod runtime;
pub mod schema;
mod server;
mod sink;
mod source;
pub mod telemetry;
mod template;
mod trace;
mod trigger;

pub use config::{Config, ConfigError};
pub use event::{parse_event, Event, EventError};
pub use exit::{Exit, ExitStatus};
pub use metrics::{get as metrics, Metrics};
pub use render::{render_event, RenderOutput};
pub use runtime::{run, send_one, SendError, SendOutcome, SendReport, StartError};

/// What benchmarks, fuzz targets and white-box integration tests drive directly: not a
/// stable API, hidden from the docs. Paths mirror the crate's modules.
#[doc(hidden)]
pub mod internals {
    /// The delivery core.
    pub mod dispatch {
        pub use crate::dispatch::{Answer, Dispatcher, InFlight, Job, Outcome, Report};
    }
    /// The event model.
    pub mod event {
        pub use crate::event::CloudEventHeaders;
    }
    /// CEL expressions.
    pub mod expr {
        pub use crate::expr::Expression;
    }
    /// Secret masking.
    pub mod mask {
        pub use crate::mask::{host_only, url, url_list, urls_in_text};
    }
    /// The intake of the main loop.
    pub mod pipeline {
        pub use crate::pipeline::{Intake, Intaker};
    }
    /// The retrying publisher.
    pub mod publish {
        pub use crate::publish::Publisher;
    }
    /// Rendering one (trigger, action) pair.
    pub mod render {
        pub use crate::render::{plan, Planned};
    }
    /// Rendered requests.
    pub mod request {
        pub use crate::request::{webhook_id, Request};
    }
    /// Destinations.
    pub mod sink {
        pub use crate::sink::nats::KEY_HEADER;
        pub use crate::sink::{FileSink, PublishError, Sink};
    }
    /// Sources, messages and the durable retry stage.
    pub mod source {
        pub use crate::source::{Ack, Coords, DurableRetry, Message, RetryInfo, RetryStage, ScheduleError, Settle};
        /// Kafka retry records, as a crashed replica leaves them.
        pub mod kafka {
            pub use crate::source::kafka::retry::{encode, Origin};
        }
    }
    /// Placeholders.
    pub mod template {
        pub use crate::template::{Escape, JsonTemplate, RenderContext, Template};
    }
    /// Trigger matching.
    pub mod trigger {
        pub use crate::trigger::{match_event, Match};
    }
}
