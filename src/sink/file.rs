//! JSON Lines appended to a file, or written to stdout for `-`: the destination of the
//! embedded default, no broker needed.

use std::io::Write;

use async_trait::async_trait;

use super::{PublishError, Sink};

/// JSON Lines appended to a file, or written to stdout for `-`.
pub struct FileSink {
    out: std::sync::Mutex<Box<dyn Write + Send>>,
}

impl FileSink {
    /// Opens (appends to) `path`, or stdout for `-`.
    pub fn open(path: &str) -> std::io::Result<FileSink> {
        let out: Box<dyn Write + Send> = if path == "-" {
            Box::new(std::io::stdout())
        } else {
            Box::new(std::fs::OpenOptions::new().create(true).append(true).open(path)?)
        };
        Ok(FileSink { out: std::sync::Mutex::new(out) })
    }
}

#[async_trait]
impl Sink for FileSink {
    async fn publish(&self, _key: &str, payload: &[u8]) -> Result<(), PublishError> {
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        out.write_all(payload)?;
        out.write_all(b"\n")?;
        out.flush()?;
        Ok(())
    }
}
