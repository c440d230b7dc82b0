//! `actions` and `presentation`: what each action sends, and the attribute lists chat
//! actions show.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::RetryConfig;

/// One action, every type's fields together; [`super::compile`] checks which belong.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionConfig {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ActionKind,
    #[serde(default)]
    pub status: ActionStatus,
    // Informational (iTop's action form has them): accepted, never used.
    #[serde(default)]
    #[allow(dead_code)]
    pub description: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    pub language: Option<String>,
    pub connection: String,
    #[serde(default)]
    pub test_connection: Option<String>,
    /// Replaces `delivery.retry` for this action.
    #[serde(default)]
    pub retry: Option<RetryConfig>,
    // webhook
    #[serde(default)]
    pub method: Option<HttpMethod>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub headers: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub payload: Option<Value>,
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub callback: Option<CallbackConfig>,
    // itop
    #[serde(default)]
    pub json_data: Option<Value>,
    // chat
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub attributes_from: Option<AttributesFrom>,
    #[serde(default)]
    pub user_info: Option<bool>,
    #[serde(default)]
    pub modify_button: Option<bool>,
    #[serde(default)]
    pub delete_button: Option<bool>,
    #[serde(default)]
    pub other_actions: Option<OtherActions>,
    #[serde(default)]
    pub other_actions_codes: Option<Vec<String>>,
    // rocketchat
    #[serde(default)]
    pub alias: Option<String>,
    #[serde(default)]
    pub avatar_url: Option<String>,
    #[serde(default)]
    pub emoji: Option<String>,
    // google chat
    #[serde(default)]
    pub thread_key: Option<String>,
    // teams
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub highlight_color: Option<String>,
    #[serde(default)]
    pub image_url: Option<String>,
    #[serde(default)]
    pub format: Option<TeamsFormat>,
}

/// How an answer becomes attribute updates for the triggering object.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallbackConfig {
    /// `success` or `any_response`.
    #[serde(default)]
    pub when: CallbackWhen,
    /// Attribute code -> CEL expression over `response`, `event`, `object`, `previous`.
    pub fields: BTreeMap<String, String>,
}

/// Attribute lists of one class.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresentationLists {
    #[serde(default)]
    pub list: Vec<String>,
    #[serde(default)]
    pub slack: Vec<String>,
    #[serde(default)]
    pub msteams: Vec<String>,
}

/// The action types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    Webhook,
    Itop,
    Slack,
    Rocketchat,
    GoogleChat,
    Teams,
}

impl ActionKind {
    /// The name used in config and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Webhook => "webhook",
            ActionKind::Itop => "itop",
            ActionKind::Slack => "slack",
            ActionKind::Rocketchat => "rocketchat",
            ActionKind::GoogleChat => "google_chat",
            ActionKind::Teams => "teams",
        }
    }

    /// Slack, Rocket.Chat, Google Chat and Teams: services whose webhook URL is the credential.
    pub fn is_chat(self) -> bool {
        matches!(self, ActionKind::Slack | ActionKind::Rocketchat | ActionKind::GoogleChat | ActionKind::Teams)
    }
}

/// Whether an action sends, sends to its test connection, or does nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionStatus {
    #[default]
    Enabled,
    Disabled,
    Test,
}

/// HTTP methods a webhook action may use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    Get,
    #[default]
    Post,
    Put,
    Patch,
    Delete,
    Head,
}

impl HttpMethod {
    /// The method as sent.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Post => "POST",
            HttpMethod::Put => "PUT",
            HttpMethod::Patch => "PATCH",
            HttpMethod::Delete => "DELETE",
            HttpMethod::Head => "HEAD",
        }
    }
}

/// Which presentation list a chat action shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttributesFrom {
    #[default]
    None,
    List,
    Slack,
    Msteams,
}

/// Which transition buttons a chat action shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OtherActions {
    #[default]
    No,
    Yes,
    Specify,
}

/// The Teams payload format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TeamsFormat {
    /// Adaptive card for Workflows (Power Automate) webhooks.
    #[default]
    AdaptiveCard,
    /// Legacy Office 365 connector card.
    MessageCard,
}

/// When a callback mapping runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallbackWhen {
    /// 2xx (and iTop code 0).
    #[default]
    Success,
    /// Any HTTP answer.
    AnyResponse,
}
