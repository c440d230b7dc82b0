//! The configuration file as written: the serde types that mirror `schemas/config.v1.json`
//! ([`raw`]), durations and sizes with units ([`units`]), secrets that print as `***`
//! ([`secret`]), and the [`Problems`] a check collects.
//!
//! Nothing here depends on the rest of the crate: `config` validates and compiles the file
//! by asking `action`, `trigger`, `connection` and `net` to compile their parts, and those
//! read the raw types from here, never from `config`.

mod checks;
mod problems;
pub mod raw;
pub mod secret;
pub mod units;

pub use checks::{check_duration, check_retry};
pub use problems::{Problem, Problems};
