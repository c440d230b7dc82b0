//! `triggers`: which events fire which actions.

use serde::Deserialize;

/// One trigger.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerConfig {
    pub name: String,
    pub on: TriggerOn,
    pub class: String,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub attributes: Vec<String>,
    #[serde(default)]
    pub condition: Option<String>,
    #[serde(default)]
    pub context: Vec<String>,
    pub actions: Vec<String>,
}

/// What a trigger fires on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerOn {
    Create,
    Update,
    Delete,
    StateEnter,
    StateLeave,
    Mention,
    LogUpdate,
}

impl TriggerOn {
    /// The name used in config.
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerOn::Create => "create",
            TriggerOn::Update => "update",
            TriggerOn::Delete => "delete",
            TriggerOn::StateEnter => "state_enter",
            TriggerOn::StateLeave => "state_leave",
            TriggerOn::Mention => "mention",
            TriggerOn::LogUpdate => "log_update",
        }
    }
}
