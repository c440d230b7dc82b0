//! Why the NATS source or a NATS destination cannot start: each variant says what to fix.

use thiserror::Error;

/// A NATS setup failure, reported at start before any message is read.
#[derive(Debug, Error)]
pub enum NatsError {
    /// The credentials or TLS settings are inconsistent or unreadable.
    #[error("credentials: {0}")]
    Credentials(String),
    /// The server could not be reached or refused the connection.
    #[error("cannot connect to {}: {}", crate::mask::url_list(.url), crate::mask::urls_in_text(.detail))]
    Connect {
        /// The URL(s) as configured.
        url: String,
        /// What the client said.
        detail: String,
    },
    /// The configured stream does not exist. hookbridge never creates it: its subjects,
    /// retention, replicas and limits are the operator's decisions.
    #[error(
        "stream {stream:?} does not exist: create it first (for example `nats stream add {stream} --subjects '<subjects>'`); hookbridge does not create streams"
    )]
    StreamMissing {
        /// Stream name.
        stream: String,
    },
    /// An existing durable consumer cannot be used as it is.
    #[error("consumer {consumer:?} on stream {stream:?} cannot be used: {reason}")]
    ConsumerMismatch {
        /// Stream name.
        stream: String,
        /// Consumer name.
        consumer: String,
        /// What differs from what the bridge needs.
        reason: String,
    },
    /// No stream captures a results or dead-letter subject, so a JetStream publish could
    /// never be acknowledged.
    #[error(
        "no JetStream stream captures subject {subject:?}: create one that does (for example `nats stream add HOOKBRIDGE_OUT --subjects '{subject}'`)"
    )]
    SubjectNotCaptured {
        /// The destination subject.
        subject: String,
    },
    /// A destination subject the bridge would read back as input.
    #[error("subject {subject:?} is captured by the source stream {stream:?} and matches the consumer's subjects: the bridge would consume its own output")]
    Loop {
        /// The destination subject.
        subject: String,
        /// The source stream.
        stream: String,
    },
    /// A destination subject that cannot be published to.
    #[error("subject {0:?} is not a valid publish subject (no wildcards or spaces)")]
    InvalidSubject(String),
    /// A NATS destination without a URL, next to a source that is not NATS.
    #[error("`url` is required when the source is not nats")]
    NoUrl,
    /// A JetStream API request failed.
    #[error("{what}: {detail}")]
    JetStream {
        /// What was asked.
        what: &'static str,
        /// What the server or client said.
        detail: String,
    },
}

impl NatsError {
    /// A JetStream request failure.
    pub(crate) fn js(what: &'static str, detail: impl std::fmt::Display) -> NatsError {
        NatsError::JetStream { what, detail: detail.to_string() }
    }
}
