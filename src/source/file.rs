//! JSON Lines from a file or stdin: the embedded default, no broker needed. Each line is one
//! message; its coordinates are the path and 1-based line number.
//!
//! A line is read into memory only up to `max_event_bytes`: a longer one is handed over cut
//! there, with `truncated_at` (the limit) and `line_bytes` (what the line held, its line
//! break included) in its coordinates. Cut JSON is not an event, so it becomes a dead
//! letter whose `source` says why, and memory stays bounded whatever a line holds.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Ack, Coords, Message, RetryStage, Source, SourceError};

/// The file source.
pub struct FileSource {
    path: String,
    follow: bool,
    max_event_bytes: usize,
}

impl FileSource {
    /// Reads `path` (`-` = stdin); with `follow`, waits for more lines at the end. Lines
    /// are read up to `delivery.max_event_bytes`' default (1 MiB).
    pub fn new(path: &str, follow: bool) -> FileSource {
        FileSource {
            path: path.to_string(),
            follow,
            max_event_bytes: crate::config::Delivery::default().max_event_bytes,
        }
    }

    /// Reads lines only up to `bytes` (`delivery.max_event_bytes`).
    pub fn with_max_event_bytes(mut self, bytes: usize) -> FileSource {
        self.max_event_bytes = bytes;
        self
    }
}

/// Appends the input up to and including the next line break to `buf`, but lets `buf` grow
/// to `cap` bytes at most (the rest of the line is read and dropped). Returns the bytes read
/// (0 at the end of the input) and whether the line break was reached.
async fn read_line_bounded<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    cap: usize,
) -> std::io::Result<(usize, bool)> {
    let mut read = 0;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok((read, false));
        }
        let (used, done) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        let room = cap.saturating_sub(buf.len());
        buf.extend_from_slice(&available[..used.min(room)]);
        reader.consume(used);
        read += used;
        if done {
            return Ok((read, true));
        }
    }
}

#[async_trait]
impl Source for FileSource {
    fn retry_stage(&self) -> RetryStage {
        RetryStage::InProcess
    }

    async fn run(
        self: Box<Self>,
        tx: mpsc::Sender<Message>,
        ready: Arc<AtomicBool>,
        shutdown: CancellationToken,
    ) -> Result<(), SourceError> {
        let reader: Box<dyn AsyncRead + Send + Unpin> = if self.path == "-" {
            Box::new(tokio::io::stdin())
        } else {
            Box::new(tokio::fs::File::open(&self.path).await?)
        };
        ready.store(true, Ordering::SeqCst);
        let mut reader = BufReader::new(reader);
        let mut line_no = 0u64;
        let max = self.max_event_bytes;
        // Room for the longest allowed line and its `\r\n`.
        let cap = max.saturating_add(2);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let (n, mut done) = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                r = read_line_bounded(&mut reader, &mut buf, cap) => r?,
            };
            if n == 0 {
                if !self.follow {
                    return Ok(());
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
                }
            }
            let mut line_bytes = n;
            while self.follow && !done {
                // A line still being written: wait for the rest of it.
                let (m, end) = tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    r = read_line_bounded(&mut reader, &mut buf, cap) => r?,
                };
                line_bytes += m;
                done = end;
                if m == 0 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            line_no += 1;
            let complete = buf.ends_with(b"\n") || (!done && buf.len() < cap);
            while complete && buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                buf.pop();
            }
            let (truncated_at, line_bytes) = if buf.len() > max {
                // Cut: the prefix is all that was kept; parsing it fails, so the line is a
                // dead letter that says where and why in its coordinates.
                buf.truncate(max);
                (Some(max as u64), Some(line_bytes as u64))
            } else if buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            } else {
                (None, None)
            };
            let coords = Coords::File { path: self.path.clone(), line: line_no, truncated_at, line_bytes };
            let message = Message { payload: buf.clone(), headers: Vec::new(), coords, ack: Ack::none(), retry: None };
            if tx.send(message).await.is_err() {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    async fn read_all(input: &[u8], max: usize) -> Vec<Message> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        std::fs::write(&path, input).unwrap();
        let source = Box::new(FileSource::new(path.to_str().unwrap(), false).with_max_event_bytes(max));
        let (tx, mut rx) = mpsc::channel(16);
        let task = tokio::spawn(source.run(tx, Arc::new(AtomicBool::new(false)), CancellationToken::new()));
        let mut out = Vec::new();
        while let Some(m) = rx.recv().await {
            out.push(m);
        }
        task.await.unwrap().unwrap();
        out
    }

    #[tokio::test]
    async fn lines_over_the_limit_are_cut_and_marked() {
        let long = format!("{{\"id\": \"{}\"}}", "x".repeat(5000));
        let input = format!("{{\"a\": 1}}\r\n{long}\n\n{}\n{}", "y".repeat(1024), "z".repeat(1030));
        let got = read_all(input.as_bytes(), 1024).await;
        let shown: Vec<(usize, Value)> = got.iter().map(|m| (m.payload.len(), json!(m.coords))).collect();
        assert_eq!(got[0].payload, b"{\"a\": 1}");
        assert_eq!(shown[1].0, 1024);
        assert_eq!(shown[1].1["truncated_at"], 1024);
        assert_eq!(shown[1].1["line_bytes"], long.len() + 1);
        assert_eq!(shown[1].1["line"], 2);
        // Exactly the limit is an event; the last line, without a line break, is cut too.
        assert_eq!((shown[2].0, shown[2].1.get("truncated_at").is_none()), (1024, true));
        assert_eq!((shown[3].0, &shown[3].1["truncated_at"], &shown[3].1["line"]), (1024, &json!(1024), &json!(5)));
        assert_eq!(got.len(), 4);
    }
}
