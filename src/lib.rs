//! hookbridge turns object-change events into outgoing webhooks and chat notifications.
//!
//! # Layout
//!
//! An event flows through the modules in this order:
//!
//! 1. [`source`] reads messages (Kafka consumer group, NATS JetStream pull consumer, or a
//!    JSON Lines file) and hands each one over with an acknowledgement that releases the
//!    source position only once every outcome for it is final.
//! 2. [`event`] parses the bytes into an [`event::Event`] (plain or CloudEvents); a message
//!    that is not an event becomes a dead letter, never a crash.
//! 3. [`trigger`] matches the event against the compiled triggers and yields the ordered
//!    (trigger, action) pairs.
//! 4. [`action`] renders each pair into an exact [`request::Request`], through the
//!    [`connection`] and the placeholders of [`template`].
//! 5. [`dispatch`] sends it: concurrency limits, per-connection isolation, per-object order,
//!    retries with backoff, `Retry-After`.
//! 6. [`publish`] writes delivery results, callback updates and dead letters.
//!
//! [`config`] validates and compiles the YAML once at start; [`metrics`] holds every metric;
//! [`server`] serves `/metrics`, `/healthz` and `/readyz`.

pub mod action;
pub mod config;
pub mod connection;
pub mod dispatch;
pub mod event;
pub mod expr;
pub mod kafka;
pub mod mask;
pub mod metrics;
pub mod nats;
pub mod net;
pub mod output;
pub mod pipeline;
pub mod publish;
pub mod render;
pub mod request;
pub mod retry;
pub mod rich_text;
pub mod runtime;
pub mod schema;
pub mod server;
pub mod source;
pub mod telemetry;
pub mod template;
pub mod trace;
pub mod trigger;
