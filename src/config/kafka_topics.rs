//! What the source subscribes to: topic names, and regular expressions written as
//! librdkafka takes them (an entry starting with `^`), which also match topics created
//! while hookbridge runs. librdkafka does the subscribing; this module checks the entries at
//! load, names the default retry topic, and lists the subscribed topics in a fixed order for
//! the retry-partition layout of the Kafka source.

use std::collections::BTreeMap;

use regex::Regex;

use super::{DestinationConfig, SourceConfig};

/// The `topics` of a Kafka source.
#[derive(Debug, Clone)]
pub struct Subscription {
    entries: Vec<String>,
    names: Vec<String>,
    patterns: Vec<Regex>,
}

/// Whether a `topics` entry is a regular expression (librdkafka's convention).
pub fn is_pattern(entry: &str) -> bool {
    entry.starts_with('^')
}

impl Subscription {
    /// Parses the entries; the error says which entry is not a valid expression.
    pub fn parse(entries: &[String]) -> Result<Subscription, (usize, String)> {
        let mut names = Vec::new();
        let mut patterns = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            if is_pattern(e) {
                let re = Regex::new(e).map_err(|err| (i, format!("not a valid regular expression: {err}")))?;
                patterns.push(re);
            } else {
                names.push(e.clone());
            }
        }
        Ok(Subscription { entries: entries.to_vec(), names, patterns })
    }

    /// The entries as given, for librdkafka's `subscribe`.
    pub fn entries(&self) -> Vec<&str> {
        self.entries.iter().map(String::as_str).collect()
    }

    /// Whether some entry is a regular expression (then every topic's metadata is needed).
    pub fn has_patterns(&self) -> bool {
        !self.patterns.is_empty()
    }

    /// The topic names given as they are.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Whether `topic` is subscribed, by name or by expression.
    pub fn matches(&self, topic: &str) -> bool {
        self.names.iter().any(|n| n == topic) || self.patterns.iter().any(|p| p.is_match(topic))
    }

    /// The subscribed topics with their partition counts, in the order of the retry layout:
    /// the names in config order (0 partitions while a topic does not exist), then the
    /// topics matched by an expression sorted by name. `existing` is what the cluster has;
    /// `excluded` are never sources (the retry topic); internal topics (`__…`) neither.
    pub fn layout(&self, existing: &BTreeMap<String, i32>, excluded: &[&str]) -> Vec<(String, i32)> {
        let mut out: Vec<(String, i32)> = Vec::new();
        for name in &self.names {
            if !out.iter().any(|(n, _)| n == name) {
                out.push((name.clone(), existing.get(name).copied().unwrap_or(0)));
            }
        }
        for (topic, count) in existing {
            let wanted = self.patterns.iter().any(|p| p.is_match(topic))
                && !topic.starts_with("__")
                && !excluded.contains(&topic.as_str())
                && !out.iter().any(|(n, _)| n == topic);
            if wanted {
                out.push((topic.clone(), *count));
            }
        }
        out
    }
}

/// The retry topic: the configured one, else `<first topic>.retry`, or `<group_id>.retry`
/// when the first entry is an expression.
pub fn retry_topic(topics: &[String], group_id: &str, configured: Option<&str>) -> String {
    match (configured, topics.first()) {
        (Some(t), _) => t.to_string(),
        (None, Some(first)) if !is_pattern(first) => format!("{first}.retry"),
        _ => format!("{group_id}.retry"),
    }
}

/// Checks a Kafka source at load: the expressions compile, and no topic hookbridge writes
/// to (retry topic, results, dead letters on the same cluster) is also one it reads, which
/// would feed its own output back to it. Returns `(place, message)` for each problem.
pub fn check(source: &SourceConfig, outputs: &[(&str, &DestinationConfig)]) -> Vec<(String, String)> {
    let SourceConfig::Kafka { brokers, group_id, topics, retry_topic: configured, group_instance_id, .. } = source
    else {
        return Vec::new();
    };
    let mut problems = Vec::new();
    if topics.is_empty() {
        problems.push(("source.topics".to_string(), "at least one topic is needed".to_string()));
    }
    if group_instance_id.as_deref().is_some_and(|i| i.trim() != i) {
        problems.push((
            "source.group_instance_id".to_string(),
            "has leading or trailing spaces; it must be the same id at every restart".to_string(),
        ));
    }
    let subscription = match Subscription::parse(topics) {
        Ok(s) => s,
        Err((i, message)) => {
            problems.push((format!("source.topics[{i}]"), message));
            return problems;
        }
    };
    let retry = retry_topic(topics, group_id, configured.as_deref());
    if subscription.matches(&retry) {
        problems.push((
            "source.retry_topic".to_string(),
            format!(
                "{retry:?} is also a source topic (or matches one of source.topics); it must be a topic of its own"
            ),
        ));
    }
    for (place, dest) in outputs {
        let DestinationConfig::Kafka { topic, brokers: own, .. } = dest else { continue };
        let same_cluster = own.as_ref().is_none_or(|b| b == brokers);
        if same_cluster && subscription.matches(topic) {
            problems.push((
                format!("{place}.topic"),
                format!("{topic:?} is also a source topic (or matches one of source.topics): hookbridge would read its own output"),
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(entries: &[&str]) -> Subscription {
        Subscription::parse(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn names_come_first_in_config_order_then_matches_sorted() {
        let s = sub(&["zeta", r"^itop\..*", "alpha"]);
        let existing: BTreeMap<String, i32> =
            [("itop.b", 2), ("itop.a", 3), ("alpha", 1), ("other", 5), ("itop.retry", 6), ("__consumer_offsets", 50)]
                .into_iter()
                .map(|(t, n)| (t.to_string(), n))
                .collect();
        let layout = s.layout(&existing, &["itop.retry"]);
        let expected: Vec<(String, i32)> = [("zeta", 0), ("alpha", 1), ("itop.a", 3), ("itop.b", 2)]
            .iter()
            .map(|(t, n)| (t.to_string(), *n))
            .collect();
        assert_eq!(layout, expected, "zeta does not exist yet; the retry topic and others are left out");
        assert!(s.matches("itop.c") && s.matches("zeta") && !s.matches("itop"));
    }

    #[test]
    fn a_bad_expression_is_named() {
        let err = Subscription::parse(&["ok".into(), "^itop.(".into()]).unwrap_err();
        assert_eq!(err.0, 1);
        assert!(err.1.contains("regular expression"), "{}", err.1);
    }

    /// What `check` (and so `hookbridge check`) says about a Kafka source and its outputs.
    fn problems(source: &str, responses: &str) -> Vec<String> {
        let yaml = format!(
            "source: {{type: kafka, brokers: [\"b:9092\"], {source}}}\nresponses: {responses}\ndead_letter: {{type: file, path: \"-\"}}\n"
        );
        match crate::config::Config::from_yaml(&yaml) {
            Ok(_) => vec![],
            Err(crate::config::ConfigError::Invalid { problems }) => problems.iter().map(|p| p.to_string()).collect(),
            Err(e) => vec![e.to_string()],
        }
    }

    #[test]
    fn subscriptions_are_checked_at_load() {
        let out = r#"{type: kafka, topic: hookbridge.responses}"#;
        assert_eq!(problems(r#"topics: ['^itop\..*'], retry_topic: itop-retry"#, out), Vec::<String>::new());
        assert_eq!(
            problems(r#"topics: ['^itop\..*'], group_instance_id: "${HOOKBRIDGE_T_UNSET:-}""#, out),
            Vec::<String>::new()
        );
        let bad = problems(r#"topics: [a, "^itop.("]"#, out);
        assert!(bad.iter().any(|p| p.starts_with("source.topics[1]:") && p.contains("regular expression")), "{bad:?}");
        // The default retry topic of `^itop\..*` subscriptions would be `hookbridge.retry`;
        // `itop.changes.retry` matches the expression.
        let loop_ = problems(r#"topics: ['^itop\..*'], retry_topic: itop.changes.retry"#, out);
        assert!(loop_.iter().any(|p| p.starts_with("source.retry_topic:")), "{loop_:?}");
        let own = problems(r#"topics: ['^hookbridge\..*'], retry_topic: r"#, out);
        assert!(own.iter().any(|p| p.starts_with("responses.topic:") && p.contains("its own output")), "{own:?}");
        let elsewhere = r#"{type: kafka, topic: hookbridge.responses, brokers: ["other:9092"]}"#;
        assert_eq!(problems(r#"topics: ['^hookbridge\..*'], retry_topic: r"#, elsewhere), Vec::<String>::new());
        let spaces = problems(r#"topics: [a], group_instance_id: " pod-0""#, out);
        assert!(spaces.iter().any(|p| p.starts_with("source.group_instance_id:")), "{spaces:?}");
    }

    #[test]
    fn the_default_retry_topic() {
        assert_eq!(retry_topic(&["a".into(), "b".into()], "g", None), "a.retry");
        assert_eq!(retry_topic(&[r"^a\..*".into()], "g", None), "g.retry");
        assert_eq!(retry_topic(&["a".into()], "g", Some("r")), "r");
    }
}
