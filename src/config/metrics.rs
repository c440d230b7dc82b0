//! The metric series a config decides, created at zero when it is loaded. Here rather than
//! in `metrics.rs` so that the metrics stay below the config in the module graph.

use super::{Config, Input};
use crate::metrics::{AttemptClass, Metrics, RetryWait, DEAD_LETTER_REASONS, INVALID_REASONS, OUTCOMES, PUBLISH_KINDS};

impl Metrics {
    /// Creates, at zero, every series whose label values the config decides: per source,
    /// trigger, action and connection, and the fixed sets of outcomes, classes and reasons.
    pub fn register_config(&self, config: &Config) {
        self.events_received.with_label_values(&[config.source.kind()]);
        for reason in INVALID_REASONS {
            self.events_invalid.with_label_values(&[reason]);
        }
        for reason in DEAD_LETTER_REASONS {
            self.dead_letters.with_label_values(&[reason]);
        }
        for kind in PUBLISH_KINDS {
            self.publish_errors.with_label_values(&[kind]);
        }
        for trigger in &config.triggers {
            self.condition_errors.with_label_values(&[&trigger.name]);
            for &a in &trigger.actions {
                self.trigger_matches.with_label_values(&[&trigger.name, &config.actions[a].name]);
            }
        }
        for action in &config.actions {
            let name = action.name.as_str();
            for outcome in OUTCOMES {
                self.deliveries.with_label_values(&[name, action.kind.as_str(), outcome]);
            }
            for class in AttemptClass::ALL {
                self.attempts.with_label_values(&[name, class.as_str()]);
            }
            for wait in RetryWait::ALL {
                self.retries_scheduled.with_label_values(&[name, wait.as_str()]);
            }
            self.delivery_duration.with_label_values(&[name]);
            self.missing_placeholders.with_label_values(&[name]);
            if action.callback.is_some() {
                self.callback_updates.with_label_values(&[name]);
                self.callback_errors.with_label_values(&[name]);
            }
            let (status, connection) = match action.status {
                crate::config_file::raw::ActionStatus::Enabled => ("enabled", Some(action.connection)),
                crate::config_file::raw::ActionStatus::Disabled => ("disabled", None),
                crate::config_file::raw::ActionStatus::Test => ("test", action.test_connection),
            };
            let connection = connection.and_then(|c| config.connections.get(c)).map_or("", |c| c.name.as_str());
            self.action_info.with_label_values(&[name, action.kind.as_str(), status, connection]).set(1);
        }
        if let Input::Nats(nats) = &config.source {
            self.nats_consumer_pending.with_label_values(&[&nats.stream, &nats.consumer]);
        }
    }
}
