//! Secrets: written as a plain string, `{env: NAME}` or `{file: PATH}`, held in a type
//! that never prints its value.

use std::fmt;

use serde::Deserialize;

/// Where a secret's value comes from, as written in the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SecretRef {
    /// `{env: NAME}`.
    Env {
        /// Environment variable name.
        env: String,
    },
    /// `{file: PATH}`; one trailing newline is removed.
    File {
        /// File path.
        file: String,
    },
    /// The value itself (discouraged outside tests).
    Literal(String),
}

impl SecretRef {
    /// Reads the value now; the error says which variable or file is missing.
    pub fn resolve(&self) -> Result<Secret, String> {
        match self {
            SecretRef::Literal(value) => Ok(Secret::new(value.clone())),
            SecretRef::Env { env } => {
                std::env::var(env).map(Secret::new).map_err(|_| format!("environment variable {env} is not set"))
            }
            SecretRef::File { file } => std::fs::read_to_string(file)
                .map(|text| {
                    let trimmed = text.strip_suffix('\n').unwrap_or(&text);
                    Secret::new(trimmed.strip_suffix('\r').unwrap_or(trimmed).to_string())
                })
                .map_err(|e| format!("cannot read secret file {file}: {e}")),
        }
    }
}

/// A secret value: `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hunter2".into());
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn env_and_file_resolve() {
        // A variable every environment has: tests never change the process's environment.
        let r: SecretRef = serde_json::from_str(r#"{"env":"HOME"}"#).unwrap();
        assert_eq!(r.resolve().unwrap().expose(), std::env::var("HOME").unwrap());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, "abc\n").unwrap();
        let r = SecretRef::File { file: path.display().to_string() };
        assert_eq!(r.resolve().unwrap().expose(), "abc");
        let missing: SecretRef = serde_json::from_str(r#"{"env":"HOOKBRIDGE_NOPE_NOPE"}"#).unwrap();
        assert!(missing.resolve().unwrap_err().contains("HOOKBRIDGE_NOPE_NOPE"));
    }
}
