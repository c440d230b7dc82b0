//! The chat actions' payloads: golden files for a realistic ticket event (Slack, Rocket.Chat,
//! Google Chat, Teams as an Adaptive Card and as a MessageCard), the behaviours around them
//! (buttons, threads, optional fields), and property tests that any attribute text, however
//! long or full of markup, yields JSON within each service's limits.
//!
//! `UPDATE_GOLDEN=1 cargo test --test chat_payloads` rewrites tests/golden/ after a
//! deliberate change; `scripts/check-chat-payloads.sh` then validates the goldens with
//! the services' own libraries.

use std::path::PathBuf;

use hookbridge::render_event;
use hookbridge::Config;
use hookbridge::{parse_event, Event};
use proptest::prelude::*;
use serde_json::{json, Value};

const CONFIG: &str = r##"
connections:
  slack:
    application: slack
    url: "https://hooks.slack.com/services/T000/B000/XXXX"
  rocketchat:
    application: rocketchat
    url: "https://chat.example.com/hooks/6512a3f2b1/Xy9LqP2mVd7Rk3TzW8bNc4Hf"
  google-chat:
    application: google_chat
    url: "https://chat.googleapis.com/v1/spaces/AAAAbcdEFg/messages?key=AIzaSyDdI0h&token=k9Xn2"
  teams-workflow:
    application: teams
    url: "https://prod-12.westeurope.logic.azure.com:443/workflows/4f1c/triggers/manual/paths/invoke?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig=abc123"
  teams-connector:
    application: teams
    url: "https://example.webhook.office.com/webhookb2/1111/IncomingWebhook/2222/3333"

presentation:
  Ticket:
    list: [ref, title, status, agent_id, team_id]
    slack: [ref, title, priority, status, team_id, agent_id, caller_id, org_id]
    msteams: [ref, priority, status, team_id, agent_id, start_date]

actions:
  - name: slack
    type: slack
    connection: slack
    message: |-
      :ticket: *$this->hyperlink()$ assigned to $this->agent_id->friendlyname$*
      $this->title$ (priority <b>$this->label(priority)$</b>, team $this->team_id->name$)
      $this->html(description)$
    attributes_from: slack
    user_info: true
    modify_button: true
    delete_button: true
    other_actions: "yes"
  - name: rocketchat
    type: rocketchat
    connection: rocketchat
    message: |-
      :warning: *Ticket $this->hyperlink()$* is now _$this->label(status)$_: $this->title$
      $this->html(description)$
    alias: "iTop ($this->team_id->name$)"
    emoji: ":ticket:"
  - name: google-chat
    type: google_chat
    connection: google-chat
    message: |-
      Ticket $this->ref$ is now $this->label(status)$ (priority $this->label(priority)$): $this->title$
      Assigned to $this->agent_id->friendlyname$ by $current_contact->first_name$. Open: $this->hyperlink()$
      $this->html(description)$
    thread_key: "$this->ref$"
  - name: teams
    type: teams
    connection: teams-workflow
    title: "$this->ref$: $this->title$"
    message: |-
      Assigned to **$this->agent_id->friendlyname$** (team $this->team_id->name$), priority _$this->label(priority)$_.
      $this->html(description)$
    highlight_color: "#E74C3C"
    image_url: "https://itop.example.com/images/priority-$this->priority$.png"
    attributes_from: msteams
    user_info: true
    modify_button: true
    other_actions: specify
    other_actions_codes: [ev_resolve, ev_close, ev_reopen]
  - name: teams-legacy
    type: teams
    format: message_card
    connection: teams-connector
    title: "$this->ref$: $this->title$"
    message: |-
      Assigned to **$this->agent_id->friendlyname$**, priority $this->label(priority)$.
      $this->html(description)$
    highlight_color: "#0078D7"
    attributes_from: list
    user_info: true
    modify_button: true
    delete_button: true
    other_actions: "yes"

triggers:
  - name: ticket-assigned
    "on": state_enter
    class: Ticket
    state: assigned
    actions: [slack, rocketchat, google-chat, teams, teams-legacy]
"##;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn config() -> Config {
    Config::from_yaml(CONFIG).unwrap_or_else(|e| panic!("test config: {e}"))
}

/// [`CONFIG`] as a value, for a test to change before reading it with [`config_of`].
fn config_value() -> Value {
    serde_norway::from_str(CONFIG).expect("CONFIG is YAML")
}

/// A config changed from [`config_value`] (JSON is YAML).
fn config_of(value: &Value) -> Config {
    Config::from_yaml(&value.to_string()).unwrap_or_else(|e| panic!("test config: {e}\n{value:#}"))
}

/// The action `name` of a config value.
fn action<'a>(config: &'a mut Value, name: &str) -> &'a mut Value {
    let actions = config["actions"].as_array_mut().expect("actions");
    actions.iter_mut().find(|a| a["name"] == name).unwrap_or_else(|| panic!("no action {name}"))
}

/// The `teams` action with a Delete button and every transition as a button instead of
/// three chosen ones.
fn teams_with_every_button(config: &mut Value) {
    let teams = action(config, "teams");
    teams.as_object_mut().expect("an action").remove("other_actions_codes");
    teams["delete_button"] = json!(true);
    teams["other_actions"] = json!("yes");
}

fn fixture() -> Value {
    let text = std::fs::read_to_string(root().join("tests/fixtures/ticket-event.json")).expect("fixture");
    serde_json::from_str(&text).expect("fixture is JSON")
}

fn event_from(doc: &Value) -> Event {
    parse_event(doc.to_string().as_bytes(), None).expect("fixture is a valid event")
}

/// The request `action` sends for the event: (URL as shown, body as JSON).
fn request(config: &Config, event: &Event, action: &str) -> (String, Value, String) {
    let out = render_event(config, event, Some(action));
    let m = out.matched.into_iter().next().unwrap_or_else(|| panic!("{action} did not match"));
    let req = m.request.unwrap_or_else(|| panic!("{action} sends nothing: {:?}", m.skipped));
    let body: Value = serde_json::from_str(&req.body).unwrap_or_else(|e| panic!("{action} body is not JSON: {e}"));
    (req.url, body, req.body)
}

fn body(config: &Config, event: &Event, action: &str) -> Value {
    request(config, event, action).1
}

/// Compares the pretty-printed body with tests/golden/NAME.json (rewritten with UPDATE_GOLDEN=1).
fn golden(name: &str, action: &str) {
    golden_of(name, &config(), &event_from(&fixture()), action);
}

fn golden_of(name: &str, config: &Config, event: &Event, action: &str) {
    let body = body(config, event, action);
    let pretty = serde_json::to_string_pretty(&body).expect("serialises") + "\n";
    let path = root().join("tests/golden").join(format!("{name}.json"));
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| !v.is_empty() && v != "0") {
        std::fs::create_dir_all(path.parent().expect("has a parent")).expect("golden dir");
        std::fs::write(&path, &pretty).expect("write golden");
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run UPDATE_GOLDEN=1 cargo test --test chat_payloads)", path.display()));
    assert!(
        expected == pretty,
        "{name}: the payload differs from {}; if the change is intended, run UPDATE_GOLDEN=1 cargo test --test chat_payloads\n--- expected\n{expected}\n--- got\n{pretty}",
        path.display()
    );
}

#[test]
fn golden_slack() {
    golden("slack", "slack");
}

#[test]
fn golden_rocketchat() {
    golden("rocketchat", "rocketchat");
}

#[test]
fn golden_google_chat() {
    golden("google_chat", "google-chat");
}

#[test]
fn golden_teams_adaptive_card() {
    golden("teams", "teams");
}

#[test]
fn golden_teams_message_card() {
    golden("teams_message_card", "teams-legacy");
}

/// Long texts are cut visibly, within Slack's limits (and the result still type-checks
/// against @slack/types in scripts/check-chat-payloads.sh).
#[test]
fn golden_slack_cut_to_the_limits() {
    let mut doc = fixture();
    let long: String = "Paper jam <b>again</b> & *again*, see <@U024BE7LH>. ".chars().cycle().take(4_000).collect();
    doc["object"]["title"] = Value::String(long.clone());
    doc["object"]["caller_id"]["friendlyname"] = Value::String(long);
    golden_of("slack_cut_to_the_limits", &config(), &event_from(&doc), "slack");
}

/// More than five buttons go into action sets (validated by adaptivecards in
/// scripts/check-chat-payloads.sh); a highlight without a title colours the message.
#[test]
fn golden_teams_many_buttons() {
    let mut changed = config_value();
    teams_with_every_button(&mut changed);
    let teams = action(&mut changed, "teams");
    teams.as_object_mut().expect("an action").remove("title");
    teams["highlight_color"] = json!("#2ECC71");
    let mut doc = fixture();
    doc["transitions"].as_array_mut().expect("transitions").push(json!({"code": "ev_pending", "label": "Pending"}));
    golden_of("teams_many_buttons", &config_of(&changed), &event_from(&doc), "teams");
}

fn strings_at(value: &Value, key: &str, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == key {
                    if let Value::String(s) = v {
                        out.push(s.clone());
                    }
                }
                strings_at(v, key, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|i| strings_at(i, key, out)),
        _ => {}
    }
}

#[test]
fn slack_message_is_mrkdwn_with_fields_user_and_buttons() {
    let b = body(&config(), &event_from(&fixture()), "slack");
    let blocks = b["blocks"].as_array().expect("blocks");
    let text = blocks[0]["text"]["text"].as_str().expect("section text");
    // The user's mrkdwn, HTML from the description and the hyperlink, escaped values.
    assert!(text.starts_with(":ticket: *<https://itop.example.com/pages/UI.php?operation=details&amp;class=UserRequest&amp;id=123|R-000123> assigned to Jane Doe*\n"), "{text}");
    assert!(text.contains("priority *critical*, team Service Desk &lt;L1&gt; &amp; Ops"), "{text}");
    assert!(text.contains("*error 50.4*") && text.contains("• Tried a ~reboot~ power cycle"), "{text}");
    // A mention inside a value is text: only the template makes mentions.
    assert!(text.contains("or &lt;@U024BE7LH&gt; if it breaks"), "{text}");
    assert!(!text.contains("<@") && !text.contains("<p>") && !text.contains("&amp;lt;"), "{text}");
    // Plain fallback for notifications.
    let fallback = b["text"].as_str().expect("text");
    assert!(fallback.starts_with(":ticket: *R-000123 assigned to Jane Doe*\n"), "{fallback}");
    assert!(fallback.contains("The printer shows error 50.4 &amp; prints blank pages."), "{fallback}");
    // Eight listed attributes in one section; labels from the event.
    let fields = blocks[1]["fields"].as_array().expect("fields");
    assert_eq!(fields.len(), 8);
    assert_eq!(fields[2]["text"], "*Priority*\ncritical");
    assert_eq!(fields[4]["text"], "*Team*\nService Desk &lt;L1&gt; &amp; Ops");
    assert_eq!(blocks[2]["elements"][0]["text"], "Ada Lovelace");
    let buttons = blocks[3]["elements"].as_array().expect("buttons");
    let labels: Vec<&str> = buttons.iter().map(|b| b["text"]["text"].as_str().unwrap_or("")).collect();
    assert_eq!(labels, ["Modify", "Delete", "Re-assign", "Mark as resolved", "Close"]);
    assert_eq!(buttons[0]["url"], "https://itop.example.com/pages/UI.php?operation=modify&class=UserRequest&id=123");
    assert_eq!(buttons[1]["url"], "https://itop.example.com/pages/UI.php?operation=delete&class=UserRequest&id=123");
    assert_eq!(
        buttons[3]["url"],
        "https://itop.example.com/pages/UI.php?operation=stimulus&stimulus=ev_resolve&class=UserRequest&id=123"
    );
    assert_eq!(buttons[1]["style"], "danger");
}

#[test]
fn empty_messages_fall_back_to_the_object_name() {
    let mut changed = config_value();
    for name in ["slack", "rocketchat"] {
        action(&mut changed, name)["message"] = json!("$this->no_such_attribute$");
    }
    let config = config_of(&changed);
    let event = event_from(&fixture());
    let slack = body(&config, &event, "slack");
    assert_eq!(
        (slack["text"].as_str(), slack["blocks"][0]["text"]["text"].as_str()),
        (Some("R-000123"), Some("R-000123"))
    );
    assert_eq!(body(&config, &event, "rocketchat")["text"], "R-000123");
}

/// Many attributes: ten fields per section, never more than 50 blocks or 40,000
/// characters, and what is left out is said.
#[test]
fn slack_splits_fields_and_stays_within_the_limits() {
    let mut doc = fixture();
    let codes: Vec<String> = (0..600).map(|i| format!("a{i}")).collect();
    for code in &codes {
        doc["object"][code] = Value::String(format!("{code} ").repeat(300));
    }
    let mut changed = config_value();
    changed["presentation"]["Ticket"]["slack"] = json!(codes);
    let config = config_of(&changed);
    let b = body(&config, &event_from(&doc), "slack");
    let blocks = b["blocks"].as_array().expect("blocks");
    assert!(blocks.len() <= 50);
    let fields: Vec<&Value> = blocks.iter().filter_map(|b| b["fields"].as_array()).flatten().collect();
    assert!(blocks.iter().filter_map(|b| b["fields"].as_array()).all(|f| f.len() <= 10));
    assert!(fields.len() > 10, "{} fields", fields.len());
    let last = fields.last().and_then(|f| f["text"].as_str()).expect("last field");
    assert_eq!(last, format!("_… {} more_", 600 - (fields.len() - 1)));
    let mut texts = Vec::new();
    strings_at(&b, "text", &mut texts);
    assert!(texts.iter().map(|t| t.chars().count()).sum::<usize>() <= 40_000);

    // Short values: the block count is what limits.
    for code in &codes {
        doc["object"][code] = Value::String("x".into());
    }
    let b = body(&config, &event_from(&doc), "slack");
    let blocks = b["blocks"].as_array().expect("blocks");
    assert_eq!(blocks.len(), 50);
    let sections: Vec<usize> = blocks.iter().filter_map(|b| b["fields"].as_array().map(Vec::len)).collect();
    assert!(sections.iter().all(|&n| n == 10), "{sections:?}");
    assert_eq!(blocks[47]["fields"][9]["text"], format!("_… {} more_", 600 - 469));
}

#[test]
fn buttons_need_the_application_url() {
    let mut doc = fixture();
    doc.as_object_mut().expect("object").remove("source");
    let config = config();
    let event = event_from(&doc);
    let slack = body(&config, &event, "slack");
    assert!(slack["blocks"].as_array().expect("blocks").iter().all(|b| b["type"] != "actions"), "{slack:#}");
    let teams = body(&config, &event, "teams");
    assert!(teams["attachments"][0]["content"].get("actions").is_none());
    let legacy = body(&config, &event, "teams-legacy");
    assert!(legacy.get("potentialAction").is_none());
}

#[test]
fn specify_shows_only_the_listed_transitions_available_now() {
    let b = body(&config(), &event_from(&fixture()), "teams");
    let actions = b["attachments"][0]["content"]["actions"].as_array().expect("actions");
    let titles: Vec<&str> = actions.iter().map(|a| a["title"].as_str().unwrap_or("")).collect();
    // ev_reopen is not available in this state; ev_assign is available but not listed.
    assert_eq!(titles, ["Modify", "Mark as resolved", "Close"]);
}

#[test]
fn teams_adaptive_card_shape() {
    let b = body(&config(), &event_from(&fixture()), "teams");
    assert_eq!(b["type"], "message");
    let attachment = &b["attachments"][0];
    assert_eq!(attachment["contentType"], "application/vnd.microsoft.card.adaptive");
    assert!(attachment["contentUrl"].is_null());
    let card = &attachment["content"];
    assert_eq!((card["type"].as_str(), card["version"].as_str()), (Some("AdaptiveCard"), Some("1.4")));
    let body = card["body"].as_array().expect("body");
    // #E74C3C exactly: a band whose background is one pixel of that colour, in the nearest
    // container style ("attention", a red) where a host shows no background image.
    assert_eq!(body[0]["type"], "Container");
    assert_eq!(body[0]["style"], "attention");
    let pixel = body[0]["backgroundImage"]["url"].as_str().expect("background image");
    let png = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        pixel.strip_prefix("data:image/png;base64,").expect("a PNG data URI"),
    )
    .expect("base64");
    assert!(png.windows(4).any(|w| w == [0, 0xE7, 0x4C, 0x3C]), "the pixel is #E74C3C");
    let title = body[1]["text"].as_str().expect("title");
    assert!(title.starts_with("R-000123: Printer \"HP-4\" on floor 2 is down"), "{title}");
    let message = body[2]["text"].as_str().expect("message");
    assert!(
        message.starts_with("Assigned to **Jane Doe** (team Service Desk <L1> & Ops), priority _critical_."),
        "{message}"
    );
    assert!(message.contains("\n\n- Tried a reboot power cycle\n- Toner is OK\n\n"), "{message}");
    assert!(
        message.contains("[Jane](https://itop.example.com/pages/UI.php?operation=details&class=Person&id=42)"),
        "{message}"
    );
    assert_eq!(body[3]["type"], "Image");
    assert_eq!(body[3]["url"], "https://itop.example.com/images/priority-1.png");
    assert_eq!(body[4]["type"], "FactSet");
    assert_eq!(body[4]["facts"][1], serde_json::json!({"title": "Priority", "value": "critical"}));
    assert_eq!(body[5]["text"], "Ada Lovelace");
    assert_eq!(body[5]["isSubtle"], true);
}

#[test]
fn teams_message_card_shape() {
    let b = body(&config(), &event_from(&fixture()), "teams-legacy");
    assert_eq!(b["@type"], "MessageCard");
    assert_eq!(b["themeColor"], "0078D7");
    assert!(b["summary"].as_str().is_some_and(|s| !s.is_empty() && s.chars().count() <= 200));
    let text = b["text"].as_str().expect("text");
    assert!(text.starts_with("Assigned to **Jane Doe**, priority critical.\n\n"), "{text}");
    // Connector cards read some HTML: angle brackets from the data are escaped.
    assert!(
        text.contains("- Tried a ~~reboot~~ power cycle\n- Toner is `OK`") && text.contains("&lt;@U024BE7LH&gt;"),
        "{text}"
    );
    assert_eq!(b["sections"][0]["activitySubtitle"], "Ada Lovelace");
    let facts = b["sections"][0]["facts"].as_array().expect("facts");
    assert_eq!(facts[0], serde_json::json!({"name": "Ref", "value": "R-000123"}));
    // Modify, Delete and three transitions asked for; a MessageCard shows four.
    let actions = b["potentialAction"].as_array().expect("actions");
    assert_eq!(actions.len(), 4);
    assert_eq!(actions[0]["targets"][0]["os"], "default");
}

#[test]
fn teams_puts_more_than_five_buttons_in_action_sets() {
    let mut changed = config_value();
    teams_with_every_button(&mut changed);
    let mut doc = fixture();
    doc["transitions"].as_array_mut().expect("transitions").push(json!({"code": "ev_pending", "label": "Pending"}));
    let config = config_of(&changed);
    let b = body(&config, &event_from(&doc), "teams");
    let card = &b["attachments"][0]["content"];
    assert!(card.get("actions").is_none());
    let sets: Vec<&Value> =
        card["body"].as_array().expect("body").iter().filter(|e| e["type"] == "ActionSet").collect();
    let counts: Vec<usize> = sets.iter().map(|s| s["actions"].as_array().map_or(0, Vec::len)).collect();
    assert_eq!(counts, [5, 1]);
}

#[test]
fn google_chat_is_plain_text_in_a_thread() {
    let (config, event) = (config(), event_from(&fixture()));
    let (shown, b, _) = request(&config, &event, "google-chat");
    assert_eq!(shown, "https://chat.googleapis.com/***", "a chat webhook is shown as its host only");
    let (matches, _) = hookbridge::internals::trigger::match_event(&config.triggers, &event);
    let m = matches.iter().find(|m| config.actions[m.action].name == "google-chat").expect("matched");
    let hookbridge::internals::render::Planned::Send { request: sent, .. } =
        hookbridge::internals::render::plan(&config, &event, m)
    else {
        panic!("google-chat sends");
    };
    let url = sent.url;
    assert!(url.ends_with("&messageReplyOption=REPLY_MESSAGE_FALLBACK_TO_NEW_THREAD"), "{url}");
    assert_eq!(b["thread"]["threadKey"], "R-000123");
    let text = b["text"].as_str().expect("text");
    assert!(text.starts_with("Ticket R-000123 is now Assigned (priority critical): Printer \"HP-4\""), "{text}");
    assert!(
        text.contains(
            "Open: R-000123 (https://itop.example.com/pages/UI.php?operation=details&class=UserRequest&id=123)"
        ),
        "{text}"
    );
    assert!(text.contains("error 50.4 & prints blank pages."), "{text}");
    assert!(!text.contains("<p>") && !text.contains("<b>") && !text.contains("&amp;"), "markup is stripped: {text}");
}

#[test]
fn rocketchat_sets_alias_avatar_and_emoji_only_when_given() {
    let b = body(&config(), &event_from(&fixture()), "rocketchat");
    assert_eq!(b["alias"], "iTop (Service Desk <L1> & Ops)");
    assert_eq!(b["emoji"], ":ticket:");
    assert!(b.get("avatar").is_none());
    let text = b["text"].as_str().expect("text");
    assert!(text.starts_with(":warning: *Ticket [R-000123](https://itop.example.com/"), "{text}");
    let mut changed = config_value();
    let rocketchat = action(&mut changed, "rocketchat");
    rocketchat.as_object_mut().expect("an action").remove("alias");
    rocketchat["avatar_url"] = json!("https://itop.example.com/logo.png");
    rocketchat["emoji"] = json!("$this->no_such_attribute$");
    let b = body(&config_of(&changed), &event_from(&fixture()), "rocketchat");
    assert_eq!(b["avatar"], "https://itop.example.com/logo.png");
    assert!(b.get("alias").is_none() && b.get("emoji").is_none(), "an empty value is left out: {b}");
}

// --- limits, for any attribute text -----------------------------------------------------

/// Characters that mean something to one of the markups, and to JSON.
const TRICKY: &[char] = &[
    '<', '>', '&', '*', '_', '~', '`', '"', '\n', '\\', '[', ']', '|', '@', ';', '#', '/', '\u{0}', '\u{200B}',
    '\u{E000}', '\u{E001}', '\u{E002}', 'é', '😀',
];

fn tricky_char() -> impl Strategy<Value = char> {
    prop_oneof![3 => prop::sample::select(TRICKY), 2 => any::<char>(), 2 => prop::char::range('a', 'z'), 1 => Just(' ')]
}

fn short_text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(tricky_char(), 0..300).prop_map(|c| c.into_iter().collect()),
        // Markup-like fragments glued together.
        prop::collection::vec(
            prop::sample::select(vec![
                "<b>",
                "</b>",
                "<i>",
                "<ul><li>",
                "</li>",
                "<a href=\"https://x.example/?a=1&b=2\">",
                "</a>",
                "<@U024BE7LH>",
                "&lt;@W12345&gt;",
                "&amp;",
                "<!channel>",
                "*",
                "_",
                "`",
                "```",
                "\n",
                "<p>",
                "</p>",
                "<pre>",
                "text ",
                "é😀"
            ]),
            0..80
        )
        .prop_map(|parts| parts.concat()),
    ]
}

/// Up to 100,000 characters: a short seed repeated.
fn long_text() -> impl Strategy<Value = String> {
    (short_text().prop_filter("a seed", |s| !s.is_empty()), 1_000usize..=100_000)
        .prop_map(|(seed, len)| seed.chars().cycle().take(len).collect())
}

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![3 => short_text(), 1 => long_text()]
}

/// The fixture with `text` in every text attribute the actions show.
fn event_with(text: &str) -> Event {
    let mut doc = fixture();
    let object = &mut doc["object"];
    object["title"] = Value::String(text.to_string());
    object["description"] = Value::String(text.to_string());
    object["team_id"]["name"] = Value::String(text.to_string());
    object["agent_id"]["friendlyname"] = Value::String(text.to_string());
    object["caller_id"]["friendlyname"] = Value::String(text.to_string());
    object["ref"] = Value::String(format!("R-{}", text.chars().take(40).collect::<String>()));
    doc["labels"]["values"]["priority"] = Value::String(text.to_string());
    doc["actor"]["contact"]["friendlyname"] = Value::String(text.to_string());
    doc["transitions"][1]["label"] = Value::String(text.to_string());
    event_from(&doc)
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn slack_stays_within_block_kit_limits(text in any_text()) {
        let b = body(&config(), &event_with(&text), "slack");
        let blocks = b["blocks"].as_array().expect("blocks");
        prop_assert!(blocks.len() <= 50, "{} blocks", blocks.len());
        prop_assert!(chars(b["text"].as_str().expect("text")) > 0);
        for block in blocks {
            if let Some(t) = block["text"]["text"].as_str() {
                prop_assert!(!t.is_empty() && chars(t) <= 3000, "section text of {} chars", chars(t));
            }
            if let Some(fields) = block["fields"].as_array() {
                prop_assert!(fields.len() <= 10);
                for f in fields {
                    let t = f["text"].as_str().expect("field text");
                    prop_assert!(!t.is_empty() && chars(t) <= 2000, "field of {} chars", chars(t));
                }
            }
            if let Some(elements) = block["elements"].as_array().filter(|_| block["type"] == "actions") {
                prop_assert!(elements.len() <= 25);
                for e in elements {
                    let t = e["text"]["text"].as_str().expect("button text");
                    prop_assert!(!t.is_empty() && chars(t) <= 75, "button text of {} chars", chars(t));
                }
            }
        }
        let mut texts = Vec::new();
        strings_at(&b, "text", &mut texts);
        let total: usize = texts.iter().map(|t| chars(t)).sum();
        prop_assert!(total <= 40_000, "{total} characters of text");
    }

    #[test]
    fn google_chat_stays_under_32000_bytes(text in any_text()) {
        let (_, b, raw) = request(&config(), &event_with(&text), "google-chat");
        prop_assert!(raw.len() <= 32_000, "{} bytes", raw.len());
        prop_assert!(b["text"].as_str().is_some_and(|t| !t.is_empty()));
    }

    #[test]
    fn teams_stays_under_28_kb(text in any_text()) {
        let config = config();
        let event = event_with(&text);
        for action in ["teams", "teams-legacy"] {
            let (_, b, raw) = request(&config, &event, action);
            prop_assert!(raw.len() <= 28_000, "{action}: {} bytes", raw.len());
            prop_assert!(b.is_object());
        }
    }

    #[test]
    fn rocketchat_is_json(text in any_text()) {
        let (_, b, _) = request(&config(), &event_with(&text), "rocketchat");
        let t = b["text"].as_str().expect("text");
        prop_assert!(!t.is_empty() && chars(t) <= 5_000, "{} characters", chars(t));
    }
}
