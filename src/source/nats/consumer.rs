//! Binding the durable consumers: the stream must exist; a missing consumer is created,
//! an existing one is checked against what the bridge needs.

use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, Info as ConsumerInfo, PullConsumer};
use async_nats::jetstream::context::{ConsumerInfoErrorKind, GetStreamErrorKind};
use async_nats::jetstream::stream::Stream;
use async_nats::jetstream::ErrorCode;

use super::connect::{error_chain, NatsClient};
use super::error::NatsError;
use super::settings::{ConsumerSpec, DEFAULT_ACK_WAIT};

pub(super) fn effective_ack_wait(consumer: &PullConsumer) -> Duration {
    let ack_wait = consumer.cached_info().config.ack_wait;
    if ack_wait.is_zero() {
        DEFAULT_ACK_WAIT
    } else {
        ack_wait
    }
}

/// The stream, which must exist.
pub(super) async fn get_stream(conn: &NatsClient, name: &str) -> Result<Stream, NatsError> {
    match conn.jetstream.get_stream(name).await {
        Ok(s) => Ok(s),
        Err(e) => match e.kind() {
            GetStreamErrorKind::JetStream(js) if js.error_code() == ErrorCode::STREAM_NOT_FOUND => {
                Err(NatsError::StreamMissing { stream: name.to_string() })
            }
            _ => Err(NatsError::js("looking up the stream", error_chain(&e))),
        },
    }
}

/// Binds the durable consumer as it is, or creates it. An existing consumer is the
/// operator's (its `ack_wait`, `max_ack_pending`, backoff are respected) but must be a pull
/// consumer with explicit acks on the configured subjects.
pub(super) async fn bind(stream: &Stream, spec: &ConsumerSpec) -> Result<PullConsumer, NatsError> {
    let existing = match stream.consumer_info(&spec.name).await {
        Ok(info) => Some(info),
        Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => None,
        Err(e) => return Err(NatsError::js("looking up the consumer", error_chain(&e))),
    };
    let Some(info) = existing else {
        let created = match stream.create_consumer(spec.config.clone()).await {
            Ok(consumer) => consumer,
            // Another replica may have created it a moment ago, with other settings.
            Err(create) => {
                let info = stream
                    .consumer_info(&spec.name)
                    .await
                    .map_err(|_| NatsError::js("creating the consumer", error_chain(&create)))?;
                check(&info, spec)?;
                return get_consumer(stream, spec).await;
            }
        };
        if let Err(e) = check(created.cached_info(), spec) {
            // A server older than 2.10 ignores several filter subjects and would have made a
            // consumer of the whole stream: do not leave it behind.
            let _ = stream.delete_consumer(&spec.name).await;
            return Err(e);
        }
        tracing::info!(stream = %spec.stream, consumer = %spec.name, "nats: durable consumer created");
        return Ok(created);
    };
    check(&info, spec)?;
    get_consumer(stream, spec).await
}

async fn get_consumer(stream: &Stream, spec: &ConsumerSpec) -> Result<PullConsumer, NatsError> {
    stream.get_consumer(&spec.name).await.map_err(|e| NatsError::js("binding the consumer", error_chain(e.as_ref())))
}

/// Whether a consumer can serve as the bridge's: pull, explicit acks, the configured filter.
pub(super) fn check(info: &ConsumerInfo, spec: &ConsumerSpec) -> Result<(), NatsError> {
    let mismatch = |reason: String| NatsError::ConsumerMismatch {
        stream: spec.stream.clone(),
        consumer: spec.name.clone(),
        reason,
    };
    let c = &info.config;
    if c.deliver_subject.is_some() {
        return Err(mismatch("it is a push consumer; hookbridge needs a pull consumer".into()));
    }
    if c.ack_policy != AckPolicy::Explicit {
        return Err(mismatch(format!("its ack policy is {:?}; hookbridge needs explicit acks", c.ack_policy)));
    }
    let mut have: Vec<String> = c.filter_subjects.clone();
    if !c.filter_subject.is_empty() {
        have.push(c.filter_subject.clone());
    }
    have.sort();
    let mut want = spec.subjects.clone();
    want.sort();
    if !want.is_empty() && have != want {
        let hint = if want.len() > 1 { " (several subjects need NATS Server 2.10 or later)" } else { "" };
        return Err(mismatch(format!(
            "it filters {have:?} but the config says subjects {want:?}{hint}; delete the consumer or use another name"
        )));
    }
    if c.max_deliver > 0 {
        tracing::warn!(
            consumer = %spec.name,
            max_deliver = c.max_deliver,
            "nats: the consumer has max_deliver set: the server drops a message after that many deliveries, without a dead letter"
        );
    }
    Ok(())
}
