//! NATS JetStream: the durable pull-consumer source and the results and dead-letter
//! publisher.

use std::sync::Arc;

use crate::config::{Config, DestinationConfig, SourceConfig};
use crate::publish::Sink;
use crate::source::Source;

/// Opens the JetStream source of `config`.
pub async fn open_source(config: &Config) -> Result<Box<dyn Source>, String> {
    let _ = config;
    Err("the nats source is not implemented yet".into())
}

/// Opens a NATS destination; the URL defaults to the NATS source's.
pub async fn open_sink(dest: &DestinationConfig, source: &SourceConfig) -> Result<Arc<dyn Sink>, String> {
    let _ = (dest, source);
    Err("nats destinations are not implemented yet".into())
}
