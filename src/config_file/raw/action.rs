//! `actions` and `presentation`: what each action sends, and the attribute lists chat
//! actions show.

use std::collections::BTreeMap;

use serde::de::{self, DeserializeOwned};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use super::RetryConfig;

/// One action: the fields every type has, and its type with that type's own fields
/// ([`ActionType`]). A field of another type is refused when the file is read.
#[derive(Debug, Clone)]
pub struct ActionConfig {
    /// Unique name, referenced by triggers and used in results and metrics.
    pub name: String,
    /// Whether it sends, sends to its test connection, or does nothing.
    pub status: ActionStatus,
    /// The connection (key of `connections`) it sends to.
    pub connection: String,
    /// The connection used with `status: test`.
    pub test_connection: Option<String>,
    /// Replaces `delivery.retry` for this action.
    pub retry: Option<RetryConfig>,
    /// The type and its own fields.
    pub action_type: ActionType,
}

impl ActionConfig {
    /// The action's type.
    pub fn kind(&self) -> ActionKind {
        self.action_type.kind()
    }
}

/// The fields every action type has (`type` aside), as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommonFields {
    name: String,
    #[serde(default)]
    status: ActionStatus,
    // Informational (iTop's action form has them): accepted, never used.
    #[serde(default, rename = "description")]
    _description: Option<String>,
    #[serde(default, rename = "language")]
    _language: Option<String>,
    connection: String,
    #[serde(default)]
    test_connection: Option<String>,
    #[serde(default)]
    retry: Option<RetryConfig>,
}

/// The keys of [`CommonFields`].
const COMMON_FIELDS: [&str; 7] =
    ["name", "status", "description", "language", "connection", "test_connection", "retry"];

impl<'de> Deserialize<'de> for ActionConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // serde refuses unknown fields only without `flatten`: the common fields are taken
        // out first, and what is left must be exactly the fields of the action's type.
        let (common, action_type) =
            split::<CommonFields, ActionType, D::Error>(Map::deserialize(deserializer)?, &COMMON_FIELDS)?;
        let CommonFields { name, status, connection, test_connection, retry, .. } = common;
        Ok(ActionConfig { name, status, connection, test_connection, retry, action_type })
    }
}

/// Deserializes the keys of `fields` listed in `first` as `A` and the others as `B`, both
/// refusing what they do not know.
fn split<A: DeserializeOwned, B: DeserializeOwned, E: de::Error>(
    mut fields: Map<String, Value>,
    first: &[&str],
) -> Result<(A, B), E> {
    let taken: Map<String, Value> = first.iter().filter_map(|k| fields.remove_entry(*k)).collect();
    let a = A::deserialize(Value::Object(taken)).map_err(E::custom)?;
    let b = B::deserialize(Value::Object(fields)).map_err(E::custom)?;
    Ok((a, b))
}

/// An action's type (`type`) and the fields only that type has.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ActionType {
    /// A generic HTTP request.
    Webhook(WebhookFields),
    /// A call to a remote iTop's REST/JSON API.
    Itop(ItopFields),
    /// A Slack incoming-webhook message.
    Slack(ChatFields),
    /// A Rocket.Chat incoming-webhook message.
    Rocketchat(RocketchatFields),
    /// A Google Chat space message.
    GoogleChat(GoogleChatFields),
    /// A Microsoft Teams card.
    Teams(TeamsFields),
}

impl ActionType {
    /// The type without its fields.
    pub fn kind(&self) -> ActionKind {
        match self {
            ActionType::Webhook(_) => ActionKind::Webhook,
            ActionType::Itop(_) => ActionKind::Itop,
            ActionType::Slack(_) => ActionKind::Slack,
            ActionType::Rocketchat(_) => ActionKind::Rocketchat,
            ActionType::GoogleChat(_) => ActionKind::GoogleChat,
            ActionType::Teams(_) => ActionKind::Teams,
        }
    }

    /// The callback mapping, for the types that have one.
    pub fn callback(&self) -> Option<&CallbackConfig> {
        match self {
            ActionType::Webhook(w) => w.callback.as_ref(),
            ActionType::Itop(i) => i.callback.as_ref(),
            ActionType::Slack(_) | ActionType::Rocketchat(_) | ActionType::GoogleChat(_) | ActionType::Teams(_) => None,
        }
    }
}

/// `type: webhook`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookFields {
    /// HTTP method (POST).
    pub method: Option<HttpMethod>,
    /// Appended to the connection URL; placeholders percent-encoded.
    pub path: Option<String>,
    /// Added after the connection's headers; values may hold placeholders.
    pub headers: Option<BTreeMap<String, String>>,
    /// The body: JSON text with placeholders, or a mapping whose strings hold them.
    pub payload: Option<Value>,
    /// `Content-Type` of the body (application/json).
    pub content_type: Option<String>,
    /// Attribute updates taken from the answer.
    pub callback: Option<CallbackConfig>,
}

/// `type: itop`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ItopFields {
    /// Added after the connection's headers; values may hold placeholders.
    pub headers: Option<BTreeMap<String, String>>,
    /// The REST/JSON request: JSON text with placeholders, or a mapping whose strings hold them.
    pub json_data: Option<Value>,
    /// Attribute updates taken from the answer.
    pub callback: Option<CallbackConfig>,
}

/// `type: slack`, and what `type: teams` shares with it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChatFields {
    /// The message, with placeholders.
    pub message: Option<String>,
    /// Which presentation list is shown under the message.
    pub attributes_from: Option<AttributesFrom>,
    /// Show who made the change.
    pub user_info: Option<bool>,
    /// A button opening the object for edition.
    pub modify_button: Option<bool>,
    /// A button deleting the object.
    pub delete_button: Option<bool>,
    /// Which transition buttons are shown.
    pub other_actions: Option<OtherActions>,
    /// With `other_actions: specify`: the stimulus codes, in display order.
    pub other_actions_codes: Option<Vec<String>>,
}

/// The keys of [`ChatFields`].
const CHAT_FIELDS: [&str; 7] = [
    "message",
    "attributes_from",
    "user_info",
    "modify_button",
    "delete_button",
    "other_actions",
    "other_actions_codes",
];

/// `type: rocketchat`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RocketchatFields {
    /// The message, with placeholders.
    pub message: Option<String>,
    /// Name shown as the author.
    pub alias: Option<String>,
    /// URL of the author's avatar.
    pub avatar_url: Option<String>,
    /// Emoji used as the avatar.
    pub emoji: Option<String>,
}

/// `type: google_chat`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GoogleChatFields {
    /// The message, with placeholders.
    pub message: Option<String>,
    /// Messages with the same key are grouped in one thread; may hold placeholders.
    pub thread_key: Option<String>,
}

/// `type: teams`: the fields it shares with Slack, and its own.
#[derive(Debug, Clone, Default)]
pub struct TeamsFields {
    /// What Teams shares with Slack.
    pub chat: ChatFields,
    /// Card title; may hold placeholders.
    pub title: Option<String>,
    /// Accent colour, `#RRGGBB`.
    pub highlight_color: Option<String>,
    /// An image shown on the card; may hold placeholders.
    pub image_url: Option<String>,
    /// Adaptive card or legacy message card.
    pub format: Option<TeamsFormat>,
}

/// The fields only Teams has.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct TeamsOwnFields {
    title: Option<String>,
    highlight_color: Option<String>,
    image_url: Option<String>,
    format: Option<TeamsFormat>,
}

impl<'de> Deserialize<'de> for TeamsFields {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (chat, own) = split::<ChatFields, TeamsOwnFields, D::Error>(Map::deserialize(deserializer)?, &CHAT_FIELDS)?;
        let TeamsOwnFields { title, highlight_color, image_url, format } = own;
        Ok(TeamsFields { chat, title, highlight_color, image_url, format })
    }
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

#[cfg(test)]
mod tests;
