//! Results, callback updates and dead letters produced to a Kafka topic, keyed by object
//! (`class::key`; dead letters of messages that are not events have the empty key).

use std::time::Duration;

use async_trait::async_trait;
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::{PublishError, Sink};
use crate::config::KafkaOutput;
use crate::source::kafka::client::{self, Logging};
use crate::source::kafka::KafkaError;

/// How long a send may wait for room in librdkafka's queue; the delivery itself is bounded
/// by `message.timeout.ms`.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(30);

/// A Kafka topic as a destination.
pub struct KafkaSink {
    producer: FutureProducer<Logging>,
    topic: String,
}

impl KafkaSink {
    /// Opens `dest`; brokers and properties it did not give are the Kafka source's.
    pub fn open(dest: &KafkaOutput) -> Result<KafkaSink, KafkaError> {
        let (brokers, topic) = (&dest.brokers, &dest.topic);
        let producer =
            client::producer(brokers, &dest.properties).create_with_context(Logging).map_err(KafkaError::Settings)?;
        Ok(KafkaSink { producer, topic: topic.clone() })
    }
}

#[async_trait]
impl Sink for KafkaSink {
    async fn publish(&self, key: &str, payload: &[u8]) -> Result<(), PublishError> {
        let record = FutureRecord::to(&self.topic).key(key).payload(payload);
        // Waits for the broker's acknowledgement: the source position waits on this.
        self.producer
            .send(record, QUEUE_TIMEOUT)
            .await
            .map(|_| ())
            .map_err(|(source, _)| classify(payload.len(), KafkaError::Produce { topic: self.topic.clone(), source }))
    }
}

/// Which produce errors cannot pass by trying the same record again. librdkafka retries
/// passing errors itself within `message.timeout.ms`; these come back at once.
fn classify(size: usize, error: KafkaError) -> PublishError {
    use rdkafka::types::RDKafkaErrorCode as C;
    let code = match &error {
        KafkaError::Produce { source, .. } => source.rdkafka_error_code(),
        _ => None,
    };
    match code {
        Some(C::MessageSizeTooLarge | C::InvalidMessageSize | C::MessageBatchTooLarge) => {
            PublishError::TooLarge { size, source: error.into() }
        }
        Some(
            C::TopicAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::UnknownTopicOrPartition
            | C::UnknownTopic
            | C::InvalidRecord,
        ) => PublishError::Refused(error.into()),
        _ => PublishError::Unavailable(error.into()),
    }
}
