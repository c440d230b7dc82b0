//! Where a message came from: its source coordinates. They go into every dead letter as
//! `source` (SPEC §5), so their JSON is part of the output contract: `{"type": "kafka",
//! "topic", "partition", "offset"}`, `{"type": "nats", "stream", "subject", "sequence",
//! "delivered"}`, `{"type": "file", "path", "line"}`; a record of the durable retry stage
//! carries its original message's coordinates and, under `retry`, where the record itself is.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The coordinates of one message, typed per source; serialized as the dead letters'
/// `source` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Coords {
    /// A Kafka record.
    Kafka {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// Offset in the partition.
        offset: i64,
        /// For a record of the retry topic (whose coordinates above are its original
        /// message's): where the record itself is.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry: Option<KafkaRecord>,
    },
    /// A JetStream message.
    Nats {
        /// Stream.
        stream: String,
        /// Subject it was published on.
        subject: String,
        /// Stream sequence.
        sequence: u64,
        /// How many times JetStream delivered it (absent on a retry record).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        delivered: Option<u64>,
        /// For a record of the retry stream (whose coordinates above are its original
        /// message's): where the record itself is.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry: Option<NatsRecord>,
    },
    /// A line of a JSON Lines file.
    File {
        /// The path as configured (`-` = stdin).
        path: String,
        /// 1-based line number.
        line: u64,
        /// Set when the line was longer than `delivery.max_event_bytes`: the limit it was
        /// cut at.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        truncated_at: Option<u64>,
        /// With `truncated_at`: the bytes the line held, its line break included.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        line_bytes: Option<u64>,
    },
    /// An event given on the command line (`hookbridge send`).
    Send,
}

/// Where a record of the Kafka retry topic is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KafkaRecord {
    /// The retry topic.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// The record's offset.
    pub offset: i64,
}

/// Where a record of the NATS retry stream is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatsRecord {
    /// The retry stream.
    pub stream: String,
    /// The record's stream sequence.
    pub sequence: u64,
}

impl Coords {
    /// The source type, a bounded label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Coords::Kafka { .. } => "kafka",
            Coords::Nats { .. } => "nats",
            Coords::File { .. } => "file",
            Coords::Send => "send",
        }
    }

    /// For a line cut at `delivery.max_event_bytes`: the limit, and the size of the line.
    pub fn truncation(&self) -> Option<(u64, u64)> {
        match self {
            Coords::File { truncated_at: Some(cut), line_bytes, .. } => Some((*cut, line_bytes.unwrap_or(*cut))),
            _ => None,
        }
    }

    /// The message's place in its source, for ordering: (partition, offset) for Kafka,
    /// (0, sequence) for NATS, (0, line) for a file.
    pub fn order(&self) -> (i64, i64) {
        match self {
            Coords::Kafka { partition, offset, .. } => (i64::from(*partition), *offset),
            Coords::Nats { sequence, .. } => (0, i64::try_from(*sequence).unwrap_or(i64::MAX)),
            Coords::File { line, .. } => (0, i64::try_from(*line).unwrap_or(i64::MAX)),
            Coords::Send => (0, 0),
        }
    }
}

/// The JSON form, as it appears in dead letters and logs.
impl fmt::Display for Coords {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&serde_json::to_string(self).map_err(|_| fmt::Error)?)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The JSON is the dead letters' `source` contract: the same keys, in the same order,
    /// as before the coordinates were typed.
    #[test]
    fn coordinates_serialize_as_the_dead_letter_contract_says() {
        let cases = [
            (
                Coords::Kafka { topic: "t".into(), partition: 2, offset: 9, retry: None },
                r#"{"type":"kafka","topic":"t","partition":2,"offset":9}"#,
            ),
            (
                Coords::Kafka {
                    topic: "t".into(),
                    partition: 2,
                    offset: 9,
                    retry: Some(KafkaRecord { topic: "t.retry".into(), partition: 0, offset: 4 }),
                },
                r#"{"type":"kafka","topic":"t","partition":2,"offset":9,"retry":{"topic":"t.retry","partition":0,"offset":4}}"#,
            ),
            (
                Coords::Nats {
                    stream: "S".into(),
                    subject: "s.a".into(),
                    sequence: 7,
                    delivered: Some(1),
                    retry: None,
                },
                r#"{"type":"nats","stream":"S","subject":"s.a","sequence":7,"delivered":1}"#,
            ),
            (
                Coords::Nats {
                    stream: "S".into(),
                    subject: "s.a".into(),
                    sequence: 7,
                    delivered: None,
                    retry: Some(NatsRecord { stream: "S_RETRY".into(), sequence: 3 }),
                },
                r#"{"type":"nats","stream":"S","subject":"s.a","sequence":7,"retry":{"stream":"S_RETRY","sequence":3}}"#,
            ),
            (
                Coords::File { path: "-".into(), line: 3, truncated_at: None, line_bytes: None },
                r#"{"type":"file","path":"-","line":3}"#,
            ),
            (
                Coords::File { path: "e.jsonl".into(), line: 3, truncated_at: Some(1024), line_bytes: Some(5000) },
                r#"{"type":"file","path":"e.jsonl","line":3,"truncated_at":1024,"line_bytes":5000}"#,
            ),
            (Coords::Send, r#"{"type":"send"}"#),
        ];
        for (coords, text) in cases {
            assert_eq!(coords.to_string(), text);
            assert_eq!(serde_json::from_str::<Coords>(text).unwrap(), coords);
        }
        assert_eq!(json!(Coords::Send)["type"], "send");
    }

    #[test]
    fn order_and_truncation_come_from_the_right_fields() {
        let k = Coords::Kafka { topic: "t".into(), partition: 2, offset: 9, retry: None };
        assert_eq!((k.kind(), k.order(), k.truncation()), ("kafka", (2, 9), None));
        let f = Coords::File { path: "p".into(), line: 5, truncated_at: Some(10), line_bytes: None };
        assert_eq!((f.kind(), f.order(), f.truncation()), ("file", (0, 5), Some((10, 10))));
    }
}
