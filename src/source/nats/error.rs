//! Why the NATS source or a NATS destination cannot start: each variant says what to fix.

use thiserror::Error;

/// A NATS setup failure, reported at start before any message is read.
#[derive(Debug, Error)]
pub enum NatsError {
    /// The credentials or TLS settings are inconsistent or unreadable.
    #[error("credentials: {0}")]
    Credentials(String),
    /// The server could not be reached.
    #[error("cannot connect to {}: {}", crate::mask::url_list(.url), crate::mask::urls_in_text(.detail))]
    Connect {
        /// The URL(s) as configured.
        url: String,
        /// What the client said.
        detail: String,
    },
    /// The server was reached and refused the client: credentials or TLS. Trying again with
    /// the same settings cannot help.
    #[error("cannot connect to {}: the server refused the client: {}", crate::mask::url_list(.url), crate::mask::urls_in_text(.detail))]
    Rejected {
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
    /// The retry stream cannot be created or made to capture the retry subject: without it a
    /// failing action could only be retried by redelivering the whole event.
    #[error(
        "retry stream {stream:?} (source.retry_stream) {reason}: give the bridge's user the right to create and update it (JetStream API `$JS.API.STREAM.CREATE.{stream}`, `$JS.API.STREAM.UPDATE.{stream}`), or create it yourself: `nats stream add {stream} --subjects '{subject}' --retention work --storage file` (the subject is source.retry_subject)"
    )]
    RetryStream {
        /// The retry stream.
        stream: String,
        /// The retry subject.
        subject: String,
        /// What went wrong.
        reason: String,
    },
    /// A destination subject that cannot be published to.
    #[error("subject {0:?} is not a valid publish subject (no wildcards or spaces)")]
    InvalidSubject(String),
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
    /// Whether the failure may pass by itself, so that start-up waits (not ready) and
    /// retries: a server unreachable or not answering, a stream not created yet. Settings
    /// that are wrong stay wrong: those end the start at once.
    pub fn is_transient(&self) -> bool {
        match self {
            NatsError::Connect { detail, .. } => !detail.contains("server URL"),
            NatsError::JetStream { .. } => true,
            // Refused credentials or TLS, a stream or an output subject that is not there: the
            // operator's to fix, said at once rather than hidden behind a not-ready pod.
            NatsError::Rejected { .. } | NatsError::StreamMissing { .. } | NatsError::SubjectNotCaptured { .. } => {
                false
            }
            // No right to create it, or its subject taken by another stream: the operator's to fix.
            NatsError::Credentials(_)
            | NatsError::RetryStream { .. }
            | NatsError::ConsumerMismatch { .. }
            | NatsError::Loop { .. }
            | NatsError::InvalidSubject(_) => false,
        }
    }

    /// A JetStream request failure.
    pub(crate) fn js(what: &'static str, detail: impl std::fmt::Display) -> NatsError {
        NatsError::JetStream { what, detail: detail.to_string() }
    }
}
