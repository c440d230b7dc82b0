//! Durations and sizes written with their unit (`200ms`, `10s`, `1h`, `64MiB`).

use std::fmt;

use serde::{Deserialize, Deserializer};

/// A duration parsed from `200ms`, `10s`, `1h` (humantime syntax).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    /// Whole seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Duration(std::time::Duration::from_secs(secs))
    }
}

impl fmt::Debug for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(text.trim())
            .map(Duration)
            .map_err(|e| serde::de::Error::custom(format!("invalid duration {text:?}: {e}")))
    }
}

/// A size in bytes parsed from `64MiB`, `1MB`, `512KiB` or a bare number of bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

impl fmt::Debug for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", bytesize::ByteSize(self.0))
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bytes(n) => Ok(Size(n)),
            Raw::Text(text) => text
                .trim()
                .parse::<bytesize::ByteSize>()
                .map(|b| Size(b.as_u64()))
                .map_err(|e| serde::de::Error::custom(format!("invalid size {text:?}: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        let d: Duration = serde_json::from_str("\"200ms\"").unwrap();
        assert_eq!(d.0, std::time::Duration::from_millis(200));
        let d: Duration = serde_json::from_str("\"1h\"").unwrap();
        assert_eq!(d.0.as_secs(), 3600);
        let s: Size = serde_json::from_str("\"64MiB\"").unwrap();
        assert_eq!(s.0, 64 * 1024 * 1024);
        let s: Size = serde_json::from_str("\"1MB\"").unwrap();
        assert_eq!(s.0, 1_000_000);
        assert!(serde_json::from_str::<Duration>("\"ten\"").is_err());
    }
}
