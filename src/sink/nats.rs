//! Results, callback updates and dead letters published to a JetStream subject. `publish`
//! returns only after the stream's PubAck, because source positions wait on it.

use async_nats::jetstream::context::GetStreamByNameErrorKind;
use async_nats::HeaderMap;
use async_trait::async_trait;
use sha2::{Digest, Sha256};

use super::{PublishError, Sink};
use crate::config::nats_subject::{is_publish_subject, subject_matches};
use crate::config::{Input, NatsOutput};
use crate::source::nats::connect::{connect, error_chain, NatsClient};
use crate::source::nats::NatsError;

/// Header that carries the message key (`class::key`), since NATS messages have none.
pub const KEY_HEADER: &str = "Hookbridge-Key";

/// A JetStream subject destination.
pub struct NatsSink {
    conn: NatsClient,
    subject: String,
}

impl NatsSink {
    /// Connects (URL and credentials as the config resolved them, the source's where the
    /// destination gives none) and checks that a stream captures the subject and that it is
    /// not the bridge's own input.
    pub async fn open(dest: &NatsOutput, source: &Input) -> Result<NatsSink, NatsError> {
        let (subject, url) = (dest.subject.as_str(), dest.url.as_str());
        if !is_publish_subject(subject) {
            return Err(NatsError::InvalidSubject(subject.to_string()));
        }
        let conn = connect(url, &dest.credentials, "hookbridge/publisher").await?;
        let captured_by = match conn.jetstream.stream_by_subject(subject).await {
            Ok(stream) => stream,
            Err(e) if e.kind() == GetStreamByNameErrorKind::NotFound => {
                return Err(NatsError::SubjectNotCaptured { subject: subject.to_string() })
            }
            Err(e) => return Err(NatsError::js("looking up the stream of the subject", error_chain(&e))),
        };
        if let Input::Nats(nats) = source {
            let same_server = url == nats.url.as_str();
            let read_back = nats.subjects.is_empty() || nats.subjects.iter().any(|f| subject_matches(f, subject));
            if same_server && captured_by == nats.stream && read_back {
                return Err(NatsError::Loop { subject: subject.to_string(), stream: nats.stream.clone() });
            }
        }
        tracing::info!(%subject, stream = %captured_by, "nats: publishing to a captured subject");
        Ok(NatsSink { conn, subject: subject.to_string() })
    }
}

#[async_trait]
impl Sink for NatsSink {
    async fn publish(&self, key: &str, payload: &[u8]) -> Result<(), PublishError> {
        let mut headers = HeaderMap::new();
        // The publisher retries a message whose PubAck was lost with the same bytes: the
        // stream's duplicate window then keeps one copy.
        headers.insert("Nats-Msg-Id", message_id(payload));
        headers.insert("Content-Type", "application/json");
        if !key.is_empty() {
            headers.insert(KEY_HEADER, header_safe(key));
        }
        let mut connections = self.conn.connections.clone();
        connections.borrow_and_update();
        let ack = self
            .conn
            .jetstream
            .publish_with_headers(self.subject.clone(), headers, payload.to_vec().into())
            .await
            .map_err(|e| classify(payload.len(), e))?;
        tokio::select! {
            acked = ack => acked.map(|_| ()).map_err(|e| classify(payload.len(), e)),
            // An acknowledgement in flight when the connection dropped never arrives: rather
            // than wait out the timeout (and stall the lane behind it), fail now so the
            // publisher sends again; the message id makes the second copy a no-op.
            Ok(()) = connections.changed() => Err(PublishError::Unavailable("reconnected before the stream acknowledged".into())),
        }
    }
}

/// Which publish errors cannot pass by sending the same message again.
fn classify(size: usize, e: async_nats::jetstream::context::PublishError) -> PublishError {
    use async_nats::jetstream::context::PublishErrorKind as K;
    let detail = error_chain(&e);
    let too_large = detail.contains("maximum payload") || detail.contains("message size exceeds");
    let refused = detail.contains("Permissions Violation") || detail.contains("permissions violation");
    match e.kind() {
        K::MaxPayloadExceeded => PublishError::TooLarge { size, source: e.into() },
        _ if too_large => PublishError::TooLarge { size, source: e.into() },
        _ if refused => PublishError::Refused(e.into()),
        _ => PublishError::Unavailable(e.into()),
    }
}

/// A stable id for a message's bytes.
fn message_id(payload: &[u8]) -> String {
    let digest = Sha256::digest(payload);
    crate::request::hex(&digest[..16])
}

/// Header values cannot hold line breaks.
fn header_safe(value: &str) -> String {
    value.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_follow_the_bytes() {
        assert_eq!(message_id(b"x"), message_id(b"x"));
        assert_ne!(message_id(b"x"), message_id(b"y"));
        assert_eq!(message_id(b"x").len(), 32);
        assert_eq!(header_safe("a\r\nb"), "a  b");
    }
}
