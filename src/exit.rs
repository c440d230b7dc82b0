//! Exit statuses of the command line, chosen from what went wrong (README, "Exit codes"):
//! each error type says which one it is, so `main.rs` never inspects messages or JSON.

use crate::config::ConfigError;
use crate::event::EventError;
use crate::runtime::{SendError, SendOutcome, SendReport, StartError};

/// How the process ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Done: valid config, a run that ended or drained, an action delivered.
    Success = 0,
    /// The bridge could not start or stopped on an error (a source or destination that
    /// cannot be opened, not ready within `startup_timeout`, a source that failed), or any
    /// other failure.
    Failed = 1,
    /// The config is invalid, or `run` refuses it (no triggers).
    InvalidConfig = 2,
    /// The event file given to `render` or `send` is not an event.
    InvalidEvent = 3,
    /// `send`: the action was not delivered (failed or skipped).
    NotDelivered = 4,
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> std::process::ExitCode {
        std::process::ExitCode::from(exit as u8)
    }
}

/// The exit status an outcome leads to.
pub trait ExitStatus {
    /// Which [`Exit`] this is.
    fn exit(&self) -> Exit;
}

impl ExitStatus for ConfigError {
    fn exit(&self) -> Exit {
        Exit::InvalidConfig
    }
}

impl ExitStatus for EventError {
    fn exit(&self) -> Exit {
        Exit::InvalidEvent
    }
}

impl ExitStatus for StartError {
    fn exit(&self) -> Exit {
        match self {
            StartError::Destination { .. }
            | StartError::Source(_)
            | StartError::Server(_)
            | StartError::NotReady(_)
            | StartError::Run(_) => Exit::Failed,
        }
    }
}

impl ExitStatus for SendError {
    fn exit(&self) -> Exit {
        match self {
            SendError::NoAction(_) | SendError::NotLinked(_) => Exit::InvalidConfig,
            SendError::Clients(_) | SendError::Interrupted => Exit::Failed,
        }
    }
}

impl ExitStatus for SendReport {
    fn exit(&self) -> Exit {
        match self.outcome {
            SendOutcome::Delivered | SendOutcome::DryRun => Exit::Success,
            SendOutcome::Failed | SendOutcome::Skipped => Exit::NotDelivered,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_documented_ones() {
        let codes: Vec<u8> = [Exit::Success, Exit::Failed, Exit::InvalidConfig, Exit::InvalidEvent, Exit::NotDelivered]
            .iter()
            .map(|e| *e as u8)
            .collect();
        assert_eq!(codes, [0, 1, 2, 3, 4]);
        assert_eq!(SendError::NoAction("x".into()).exit(), Exit::InvalidConfig);
        assert_eq!(StartError::NotReady(std::time::Duration::from_secs(1)).exit(), Exit::Failed);
    }
}
