//! Problems found while checking a config, collected so the user sees them all at once.

use std::fmt;

/// One thing wrong with the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where: `actions[2].payload`.
    pub place: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.place, self.message)
    }
}

/// Collects problems while checking, so the user sees them all at once.
#[derive(Debug, Default)]
pub struct Problems(pub(crate) Vec<Problem>);

impl Problems {
    /// Records one problem.
    pub fn add(&mut self, place: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem { place: place.into(), message: message.into() });
    }

    /// Where the list stands now, to ask later whether a part added problems.
    pub fn mark(&self) -> usize {
        self.0.len()
    }

    /// Whether problems were recorded since `mark`: a part with problems is reported, never
    /// compiled.
    pub fn added_since(&self, mark: usize) -> bool {
        self.0.len() > mark
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
