//! NATS subjects: which can be published to, and which a filter with wildcards matches.
//! Used by the retry stream (is its subject captured?) and the JetStream destination (would
//! the bridge read its own output back?).

/// Whether `subject` can be published to: tokens without wildcards or spaces.
pub fn is_publish_subject(subject: &str) -> bool {
    !subject.is_empty()
        && subject.split('.').all(|t| !t.is_empty() && t != "*" && t != ">" && !t.chars().any(char::is_whitespace))
}

/// Whether the subject filter `filter` (with `*` and `>` wildcards) matches `subject`.
pub fn subject_matches(filter: &str, subject: &str) -> bool {
    let mut f = filter.split('.');
    let mut s = subject.split('.');
    loop {
        match (f.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_like_nats() {
        assert!(subject_matches("hookbridge.>", "hookbridge.results"));
        assert!(subject_matches("hookbridge.*", "hookbridge.results"));
        assert!(!subject_matches("hookbridge.*", "hookbridge.results.x"));
        assert!(!subject_matches("hookbridge.>", "hookbridge"));
        assert!(subject_matches("a.b", "a.b"));
        assert!(!subject_matches("a.b", "a.c"));
    }

    #[test]
    fn publish_subjects_have_no_wildcards() {
        assert!(is_publish_subject("hookbridge.results"));
        assert!(!is_publish_subject("hookbridge.>"));
        assert!(!is_publish_subject("a..b"));
        assert!(!is_publish_subject("a b"));
    }
}
