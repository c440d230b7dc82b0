//! JSON Lines from a file or stdin: the embedded default, no broker needed. Each line is one
//! message; its coordinates are the path and 1-based line number.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Ack, Message, RetryStage, Source, SourceError};

/// The file source.
pub struct FileSource {
    path: String,
    follow: bool,
}

impl FileSource {
    /// Reads `path` (`-` = stdin); with `follow`, waits for more lines at the end.
    pub fn new(path: &str, follow: bool) -> FileSource {
        FileSource { path: path.to_string(), follow }
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
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let n = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                n = reader.read_until(b'\n', &mut buf) => n?,
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
            if self.follow && !buf.ends_with(b"\n") {
                // A line still being written: wait for the rest of it.
                let mut rest = Vec::new();
                loop {
                    let m = tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        m = reader.read_until(b'\n', &mut rest) => m?,
                    };
                    if m == 0 {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                    if rest.ends_with(b"\n") {
                        break;
                    }
                }
                buf.extend_from_slice(&rest);
            }
            line_no += 1;
            while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                buf.pop();
            }
            if buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let message = Message {
                payload: buf.clone(),
                headers: Vec::new(),
                coords: json!({"type": "file", "path": self.path, "line": line_no}),
                ack: Ack::none(),
                retry: None,
            };
            if tx.send(message).await.is_err() {
                return Ok(());
            }
        }
    }
}
