//! The retry stream: where one delivery (trigger, action, mention) of an event waits for its
//! next attempt, so that the event's other actions are never sent again.
//!
//! A retry record carries the original payload and headers, plus three headers of ours: the
//! [`RetryInfo`] as JSON (which delivery, attempts made so far), the time before which it
//! must not be tried (unix milliseconds), and the coordinates of the original message.
//! The stream has work-queue retention: a record is removed once acked, and it is acked only
//! when its delivery reached a final outcome or a newer record of it is stored.
//!
//! The source reads the records back through a second durable pull consumer
//! (`<consumer>-retry`), shared by the replicas like the main one; a record not yet due is
//! NAKed with the remaining delay, so JetStream holds it until then.

use std::time::Duration;

use async_nats::header::{HeaderName, HeaderValue};
use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::stream::{Config as StreamConfig, RetentionPolicy, StorageType, Stream};
use async_nats::jetstream::ErrorCode;
use async_nats::HeaderMap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;
use tokio::sync::watch;

use super::connect::{error_chain, NatsClient};
use super::error::NatsError;
use crate::config::nats_subject::subject_matches;
use crate::source::{Coords, Message, NatsRecord, RetryInfo, TwoStepRetry};

/// Header holding the [`RetryInfo`] as JSON.
pub const INFO_HEADER: &str = "hookbridge-retry";
/// Header holding the time before which the delivery must not be tried, unix milliseconds.
pub const NOT_BEFORE_HEADER: &str = "hookbridge-retry-not-before";
/// Header holding the original message's coordinates as JSON.
pub const ORIGIN_HEADER: &str = "hookbridge-retry-origin";
/// Prefix under which the original message's `Nats-*` headers are carried, their names in
/// lower case. Published as they are, they would act on the retry stream: the publisher's
/// `Nats-Msg-Id` would make the stream drop a second record of the same event as a
/// duplicate, `Nats-Expected-*` would make the publish fail. Lower case, because NATS Server
/// 2.9 looks a header up by the first occurrence of its name anywhere in the header block:
/// `hookbridge-original-Nats-Msg-Id` written before our own `Nats-Msg-Id` makes it ignore
/// the record's id.
const ESCAPED_PREFIX: &str = "hookbridge-original-";

/// Where a parked delivery's message came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// Source stream.
    pub stream: String,
    /// Subject the message was published on.
    pub subject: String,
    /// Stream sequence of the message.
    pub sequence: u64,
}

impl Origin {
    /// The origin named by a message's coordinates. A retry record's coordinates are its
    /// origin's, so a delivery parked again keeps its first coordinates.
    pub fn from_coords(coords: &Coords) -> Option<Origin> {
        match coords {
            Coords::Nats { stream, subject, sequence, .. } => {
                Some(Origin { stream: stream.clone(), subject: subject.clone(), sequence: *sequence })
            }
            _ => None,
        }
    }

    /// The coordinates of a retry record: its origin's, and where the record itself is.
    pub fn coords(&self, retry_stream: &str, record_sequence: u64) -> Coords {
        Coords::Nats {
            stream: self.stream.clone(),
            subject: self.subject.clone(),
            sequence: self.sequence,
            delivered: None,
            retry: Some(NatsRecord { stream: retry_stream.to_string(), sequence: record_sequence }),
        }
    }
}

/// A record read back from the retry stream.
#[derive(Debug)]
pub struct Returned {
    /// Which delivery, and how many attempts it had.
    pub info: RetryInfo,
    /// Not to be tried before this time (unix ms).
    pub not_before_ms: i64,
    /// The original message's coordinates.
    pub origin: Origin,
    /// The original headers.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Reads our headers off a retry record and restores the original ones; the error says
/// which header is missing or unreadable.
pub fn decode(headers: Vec<(String, Vec<u8>)>) -> Result<Returned, String> {
    let mut info = None;
    let mut not_before = None;
    let mut origin = None;
    let mut rest = Vec::new();
    for (k, v) in headers {
        if k.eq_ignore_ascii_case(INFO_HEADER) {
            info = Some(serde_json::from_slice::<RetryInfo>(&v).map_err(|e| format!("{INFO_HEADER}: {e}"))?);
        } else if k.eq_ignore_ascii_case(NOT_BEFORE_HEADER) {
            let text = std::str::from_utf8(&v).map_err(|e| format!("{NOT_BEFORE_HEADER}: {e}"))?;
            not_before = Some(text.trim().parse::<i64>().map_err(|e| format!("{NOT_BEFORE_HEADER}: {e}"))?);
        } else if k.eq_ignore_ascii_case(ORIGIN_HEADER) {
            origin = Some(serde_json::from_slice::<Origin>(&v).map_err(|e| format!("{ORIGIN_HEADER}: {e}"))?);
        } else if let Some(original) = strip_prefix_ignore_case(&k, ESCAPED_PREFIX) {
            rest.push((original.to_string(), v));
        } else if strip_prefix_ignore_case(&k, "nats-").is_none() {
            rest.push((k, v));
        }
        // (A `Nats-*` header as it is belongs to the record itself, like its `Nats-Msg-Id`.)
    }
    Ok(Returned {
        info: info.ok_or(format!("no {INFO_HEADER} header"))?,
        not_before_ms: not_before.ok_or(format!("no {NOT_BEFORE_HEADER} header"))?,
        origin: origin.ok_or(format!("no {ORIGIN_HEADER} header"))?,
        headers: rest,
    })
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &s[prefix.len()..])
}

/// The headers of a retry record: the original ones (`Nats-*` escaped), then ours.
pub fn encode(
    headers: &[(String, Vec<u8>)],
    info: &RetryInfo,
    not_before_ms: i64,
    origin: &Origin,
) -> Result<HeaderMap, ScheduleError> {
    let mut out = HeaderMap::new();
    for (k, v) in headers {
        let name = if strip_prefix_ignore_case(k, "nats-").is_some() {
            format!("{ESCAPED_PREFIX}{}", k.to_ascii_lowercase())
        } else {
            k.clone()
        };
        let value = String::from_utf8_lossy(v);
        let bad = |e: &dyn std::fmt::Display| ScheduleError::Header { name: k.clone(), detail: e.to_string() };
        let name = HeaderName::try_from(name).map_err(|e| bad(&e))?;
        let value: HeaderValue = value.parse().map_err(|e| bad(&e))?;
        out.append(name, value);
    }
    let info = serde_json::to_string(info).expect("RetryInfo serializes");
    let origin = serde_json::to_string(origin).expect("Origin serializes");
    out.insert(INFO_HEADER, info.as_str());
    out.insert(NOT_BEFORE_HEADER, not_before_ms.to_string().as_str());
    out.insert(ORIGIN_HEADER, origin.as_str());
    Ok(out)
}

/// Why a delivery could not be stored in the retry stream; the dispatcher then retries it
/// in process.
#[derive(Debug, Error)]
pub enum ScheduleError {
    /// The message carries no NATS coordinates to name its origin.
    #[error("no NATS coordinates in {0}")]
    NoOrigin(Coords),
    /// An original header cannot be carried over.
    #[error("header {name:?} cannot be carried into the retry record: {detail}")]
    Header {
        /// Header name.
        name: String,
        /// Why.
        detail: String,
    },
    /// The publish failed or was not acknowledged.
    #[error("publishing to the retry stream {stream:?} failed: {detail}")]
    Publish {
        /// The retry stream.
        stream: String,
        /// What the client said.
        detail: String,
    },
    /// Another stream acknowledged the record: the retry subject is captured elsewhere.
    #[error("the retry record was stored by stream {got:?}, not the retry stream {expected:?}")]
    WrongStream {
        /// The retry stream.
        expected: String,
        /// The stream that acknowledged.
        got: String,
    },
}

/// The durable retry stage of the NATS source.
pub struct NatsRetry {
    jetstream: async_nats::jetstream::Context,
    connections: watch::Receiver<u64>,
    stream: String,
    subject: String,
}

/// A retry record ready to be published.
pub(crate) struct Parked {
    headers: HeaderMap,
    payload: Vec<u8>,
    /// Its `Nats-Msg-Id`.
    id: String,
}

impl NatsRetry {
    /// A stage publishing to `subject`, which `stream` captures, on `conn`.
    pub fn new(conn: &NatsClient, stream: &str, subject: &str) -> NatsRetry {
        NatsRetry {
            jetstream: conn.jetstream.clone(),
            connections: conn.connections.clone(),
            stream: stream.to_string(),
            subject: subject.to_string(),
        }
    }
}

/// The `Nats-Msg-Id` of a retry record: the same for the same step of the same delivery, so
/// that the stream's duplicate window keeps one record per step.
///
/// A step is named by the original message, the delivery, the attempts made, and the record
/// it came from (none for the first, which comes from the event). When a process dies after
/// storing a record but before the ack of the one it came from is confirmed, that one comes
/// back, its attempt is made again, and the record it leads to is the one already stored:
/// without the id, two records would carry the delivery on, each to its own end (two
/// results, two dead letters). The record it came from keeps ids apart when a delivery is
/// parked again with unchanged attempts behind an earlier one of its object.
fn record_id(origin: &Origin, info: &RetryInfo, from: Option<u64>) -> String {
    let step = serde_json::to_vec(&(
        &origin.stream,
        origin.sequence,
        &info.trigger,
        &info.action,
        info.mention,
        info.attempts,
        from,
    ))
    .expect("a tuple serializes");
    Sha256::digest(&step).iter().take(16).map(|b| format!("{b:02x}")).collect()
}

impl TwoStepRetry for NatsRetry {
    type Record = Parked;
    type Error = ScheduleError;

    /// Builds the record of a delivery; synchronous, so that the future publishing it does
    /// not hold the message (which is not `Sync`).
    fn record(&self, message: &Message, info: &RetryInfo, delay: Duration) -> Result<Parked, ScheduleError> {
        let origin =
            Origin::from_coords(&message.coords).ok_or_else(|| ScheduleError::NoOrigin(message.coords.clone()))?;
        let not_before = chrono::Utc::now().timestamp_millis() + delay.as_millis() as i64;
        let mut headers = encode(&message.headers, info, not_before, &origin)?;
        let from = match &message.coords {
            Coords::Nats { retry: Some(record), .. } => Some(record.sequence),
            _ => None,
        };
        let id = record_id(&origin, info, from);
        headers.insert("Nats-Msg-Id", id.as_str());
        Ok(Parked { headers, payload: message.payload.clone(), id })
    }

    async fn store(&self, parked: Parked) -> Result<(), ScheduleError> {
        let failed = |detail: String| ScheduleError::Publish { stream: self.stream.clone(), detail };
        let id = parked.id;
        let mut connections = self.connections.clone();
        connections.borrow_and_update();
        let ack = self
            .jetstream
            .publish_with_headers(self.subject.clone(), parked.headers, parked.payload.into())
            .await
            .map_err(|e| failed(error_chain(&e)))?;
        // Only once the stream acknowledged the record is the delivery safe there, and only
        // then may the message it came from be acked.
        let ack = tokio::select! {
            acked = ack => acked.map_err(|e| failed(error_chain(&e)))?,
            // An acknowledgement in flight when the connection dropped never arrives. The
            // record may still have been stored: then the delivery is attempted twice, which
            // the webhook-id lets receivers drop; failing is what must not be lost.
            Ok(()) = connections.changed() => return Err(failed("reconnected before the stream acknowledged".into())),
        };
        if ack.stream != self.stream {
            return Err(ScheduleError::WrongStream { expected: self.stream.clone(), got: ack.stream });
        }
        if ack.duplicate {
            // The same step of this delivery is already stored (see `record_id`): that record
            // carries it on, and the one being handled can be acked.
            tracing::debug!(stream = %self.stream, sequence = ack.sequence, id = %id, "nats: retry record already stored");
        } else {
            tracing::debug!(stream = %self.stream, sequence = ack.sequence, id = %id, "nats: retry record stored");
        }
        Ok(())
    }
}

/// How often the capture check of a shared retry stream is repeated: replicas of different
/// consumers adding their subjects at the same moment may overwrite each other's update.
const CAPTURE_TRIES: usize = 6;

/// Makes sure the retry stream exists (creating it with work-queue retention and file
/// storage) and captures `subject`, adding the subject to an existing stream that does not.
pub async fn ensure_stream(conn: &NatsClient, name: &str, subject: &str) -> Result<Stream, NatsError> {
    let refused =
        |reason: String| NatsError::RetryStream { stream: name.to_string(), subject: subject.to_string(), reason };
    // A subject captured by another stream (the source stream with a `>` filter, an output
    // stream on `hookbridge.>`) would send the records there.
    match conn.jetstream.stream_by_subject(subject).await {
        Ok(other) if other != name => {
            return Err(refused(format!("its subject {subject:?} is already captured by stream {other:?}")))
        }
        Ok(_) => {}
        Err(e) => tracing::debug!(error = %error_chain(&e), "nats: looking up the stream of the retry subject"),
    }
    let stream = match conn.jetstream.get_stream(name).await {
        Ok(stream) => stream,
        Err(e) if is_not_found(&e) => create_stream(conn, name, subject).await.map_err(refused)?,
        Err(e) => return Err(NatsError::js("looking up the retry stream", error_chain(&e))),
    };
    let retention = stream.cached_info().config.retention;
    if retention != RetentionPolicy::WorkQueue {
        tracing::warn!(stream = name, ?retention, "nats: the retry stream does not have work-queue retention: handled records are kept until its limits remove them");
    }
    for _ in 0..CAPTURE_TRIES {
        let info = stream.get_info().await.map_err(|e| NatsError::js("reading the retry stream", error_chain(&e)))?;
        if info.config.subjects.iter().any(|f| subject_matches(f, subject)) {
            return Ok(stream);
        }
        let mut config = info.config.clone();
        config.subjects.push(subject.to_string());
        tracing::info!(stream = name, subject, "nats: adding the retry subject to the retry stream");
        conn.jetstream.update_stream(config).await.map_err(|e| {
            refused(format!("does not capture {subject:?} and could not be updated: {}", error_chain(&e)))
        })?;
        // Read back after a pause: a concurrent update may have replaced this one.
        tokio::time::sleep(Duration::from_millis(50 + rand::random::<u64>() % 200)).await;
    }
    Err(refused(format!("{subject:?} was added but does not stay among its subjects (concurrent updates?)")))
}

async fn create_stream(conn: &NatsClient, name: &str, subject: &str) -> Result<Stream, String> {
    let config = StreamConfig {
        name: name.to_string(),
        description: Some("hookbridge: deliveries waiting for a retry, one per record".into()),
        subjects: vec![subject.to_string()],
        // A record is removed once acked: the stream holds only what still waits.
        retention: RetentionPolicy::WorkQueue,
        // Retries must survive a server restart.
        storage: StorageType::File,
        ..Default::default()
    };
    match conn.jetstream.create_stream(config).await {
        Ok(stream) => {
            tracing::info!(stream = name, subject, "nats: retry stream created");
            Ok(stream)
        }
        // Another replica may have created it a moment ago.
        Err(create) => conn
            .jetstream
            .get_stream(name)
            .await
            .map_err(|_| format!("does not exist and could not be created: {}", error_chain(&create))),
    }
}

fn is_not_found(e: &async_nats::jetstream::context::GetStreamError) -> bool {
    matches!(e.kind(), GetStreamErrorKind::JetStream(js) if js.error_code() == ErrorCode::STREAM_NOT_FOUND)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> RetryInfo {
        RetryInfo { trigger: "t".into(), action: "a".into(), mention: Some(2), attempts: 3, first_attempt_ms: 1_700 }
    }

    fn as_pairs(headers: &HeaderMap) -> Vec<(String, Vec<u8>)> {
        headers
            .iter()
            .flat_map(|(k, vs)| vs.iter().map(move |v| (k.to_string(), v.as_str().as_bytes().to_vec())))
            .collect()
    }

    #[test]
    fn a_record_carries_the_delivery_and_the_original_headers() {
        let origin = Origin { stream: "CHANGES".into(), subject: "changes.1".into(), sequence: 42 };
        let original =
            vec![("ce-id".to_string(), b"ce-1".to_vec()), ("Nats-Msg-Id".to_string(), b"publisher-id".to_vec())];
        let mut headers = encode(&original, &info(), 123_456, &origin).unwrap();
        // The publisher's message id must not act on the retry stream, nor its name appear
        // anywhere in the header block but where the record's own id is.
        assert!(headers.get("Nats-Msg-Id").is_none());
        assert!(!headers.iter().any(|(k, _)| k.to_string().contains("Nats-")), "{headers:?}");
        headers.insert("Nats-Msg-Id", "the record's own");
        let back = decode(as_pairs(&headers)).unwrap();
        assert_eq!(back.origin, origin);
        assert_eq!(back.not_before_ms, 123_456);
        assert_eq!((back.info.trigger.as_str(), back.info.action.as_str()), ("t", "a"));
        assert_eq!((back.info.mention, back.info.attempts, back.info.first_attempt_ms), (Some(2), 3, 1_700));
        let mut restored = back.headers;
        restored.sort();
        // Header names are case-insensitive; the escaped ones come back in lower case.
        let mut want =
            vec![("ce-id".to_string(), b"ce-1".to_vec()), ("nats-msg-id".to_string(), b"publisher-id".to_vec())];
        want.sort();
        assert_eq!(restored, want);
        // Carried again, they stay escaped: nothing accumulates from record to record.
        let again = encode(&restored, &info(), 1, &back.origin).unwrap();
        assert_eq!(decode(as_pairs(&again)).unwrap().headers.len(), 2);
    }

    #[test]
    fn broken_records_say_what_is_wrong() {
        let origin = br#"{"stream": "S", "subject": "s", "sequence": 1}"#.to_vec();
        let good_info = serde_json::to_vec(&info()).unwrap();
        type Headers = Vec<(String, Vec<u8>)>;
        let cases: Vec<(Headers, &str)> = vec![
            (vec![], "no hookbridge-retry header"),
            (vec![(INFO_HEADER.into(), b"not json".to_vec())], "hookbridge-retry:"),
            (
                vec![(INFO_HEADER.into(), good_info.clone()), (NOT_BEFORE_HEADER.into(), b"soon".to_vec())],
                "hookbridge-retry-not-before:",
            ),
            (
                vec![(INFO_HEADER.into(), good_info.clone()), (NOT_BEFORE_HEADER.into(), b"5".to_vec())],
                "no hookbridge-retry-origin header",
            ),
            (
                vec![
                    (INFO_HEADER.into(), good_info),
                    (NOT_BEFORE_HEADER.into(), b"5".to_vec()),
                    (ORIGIN_HEADER.into(), origin[..10].to_vec()),
                ],
                "hookbridge-retry-origin:",
            ),
        ];
        for (headers, want) in cases {
            let err = decode(headers).unwrap_err();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        }
    }

    #[test]
    fn record_ids_name_the_step_of_a_delivery() {
        let origin = Origin { stream: "CHANGES".into(), subject: "changes.1".into(), sequence: 42 };
        let first = record_id(&origin, &info(), None);
        assert_eq!(first, record_id(&origin, &info(), None), "the same step twice: one record");
        assert_eq!(first.len(), 32);
        // Parked again with unchanged attempts: a new record each time.
        assert_ne!(record_id(&origin, &info(), Some(7)), record_id(&origin, &info(), Some(8)));
        let next = RetryInfo { attempts: 4, ..info() };
        assert_ne!(first, record_id(&origin, &next, None));
        let other_action = RetryInfo { action: "b".into(), ..info() };
        assert_ne!(first, record_id(&origin, &other_action, None));
        let later = Origin { sequence: 43, ..origin.clone() };
        assert_ne!(first, record_id(&later, &info(), None));
    }

    #[test]
    fn a_record_keeps_its_first_origin() {
        let origin = Origin { stream: "CHANGES".into(), subject: "changes.1".into(), sequence: 42 };
        let coords = origin.coords("CHANGES_RETRY", 7);
        assert_eq!(serde_json::json!(coords)["retry"], serde_json::json!({"stream": "CHANGES_RETRY", "sequence": 7}));
        assert_eq!(Origin::from_coords(&coords), Some(origin));
        let main: Coords = serde_json::from_value(serde_json::json!({"type": "nats", "stream": "CHANGES", "subject": "changes.1", "sequence": 42, "delivered": 1})).unwrap();
        assert_eq!(Origin::from_coords(&main).unwrap().sequence, 42);
        assert_eq!(Origin::from_coords(&Coords::Send), None);
    }
}
