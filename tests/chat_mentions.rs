//! Values are text in every chat format: adversarial event values (`<!here>`, `<users/all>`,
//! `@all`, `<@U…>`, entities, zero-width characters, placeholders right after `<`, `@`, `#`
//! or `<users/`) go through Slack, Rocket.Chat, Google Chat and both Teams formats; each
//! payload is parsed the way the service reads mentions, and must hold no mention the
//! template did not write.

use hookbridge::parse_event;
use hookbridge::render_event;
use hookbridge::Config;
use proptest::prelude::*;
use serde_json::{json, Value};

const CONFIG: &str = r##"
connections:
  slack: {url: "https://hooks.slack.com/services/T000/B000/XXXX"}
  rocketchat: {url: "https://chat.example.com/hooks/6512a3f2b1/Xy9LqP2mVd7Rk3TzW8bNc4Hf"}
  gchat: {url: "https://chat.googleapis.com/v1/spaces/AAAA/messages?key=k&token=t"}
  teams: {url: "https://prod-12.westeurope.logic.azure.com/workflows/1/triggers/manual/paths/invoke?sig=s"}
presentation:
  Ticket: {list: [title, site], slack: [title, site], msteams: [title, site]}
actions:
  - name: slack
    type: slack
    connection: slack
    message: "<!here> <@U0TEMPLATE> $this->title$ <$this->site$|open> <$this->site$> <@$this->site$> <!$this->site$> <#$this->site$> @$this->site$ <https://x.example/$this->site$|$this->title$> $this->html(description)$"
    attributes_from: slack
    user_info: true
  - name: rocketchat
    type: rocketchat
    connection: rocketchat
    message: "@tmpl.user $this->title$ @$this->site$ #$this->site$ <$this->site$> $this->html(description)$"
    alias: "$this->title$"
  - name: gchat
    type: google_chat
    connection: gchat
    message: "<users/111> $this->title$ <$this->site$> <users/$this->site$> $this->html(description)$"
  - name: teams
    type: teams
    connection: teams
    title: "$this->title$ <at>$this->site$</at>"
    message: "$this->title$ <at>$this->site$</at> $this->html(description)$"
    attributes_from: msteams
    user_info: true
  - name: teams-card
    type: teams
    format: message_card
    connection: teams
    title: "$this->title$"
    message: "$this->title$ <at>$this->site$</at> $this->html(description)$"
    attributes_from: list
    user_info: true
triggers:
  - {name: t, "on": create, class: Ticket, actions: [slack, rocketchat, gchat, teams, teams-card]}
"##;

const GROUPS: [&str; 4] = ["all", "here", "channel", "everyone"];

/// Pieces of hostile values.
const FRAGMENTS: &[&str] = &[
    "<!here>",
    "<!channel>",
    "<!everyone>",
    "<!subteam^S012>",
    "<users/all>",
    "<users/123>",
    "@all",
    "@here",
    "@channel",
    "@bob",
    "#general",
    "<@U024BE7LH>",
    "<@W0123ABC>",
    "&lt;@U024BE7LH&gt;",
    "&lt;!here&gt;",
    "&#60;!channel&#62;",
    "&amp;lt;@U024BE7LH&amp;gt;",
    "<https://evil.example|click>",
    "[x](https://evil.example)",
    "<at>Bob</at>",
    "<b>",
    "</b>",
    "<p>",
    "<a href=\"https://evil.example\">",
    "</a>",
    "\u{200B}",
    "\u{200D}",
    "\u{2060}",
    "\u{FEFF}",
    "\u{E000}",
    "\u{E001}",
    "\u{E002}",
    "\u{E004}",
    "<",
    ">",
    "@",
    "!",
    "|",
    "&",
    ";",
    "*",
    "_",
    "users/",
    "U024BE7LH",
    "all",
    "here",
    "1234",
    " ",
    "\n",
];

fn hostile() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            4 => prop::sample::select(FRAGMENTS).prop_map(str::to_string),
            1 => "[a-z ]{0,4}",
            1 => any::<char>().prop_map(|c| c.to_string()),
        ],
        0..8,
    )
    .prop_map(|parts| parts.concat())
}

/// Every string under `key`, anywhere in the payload.
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

fn is_name_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// Slack reads `<…>` spans made of raw `<` and `>`: `<@U…>`, `<!here>`, `<#C…>` mention or
/// point; escaped `&lt;` is text.
fn slack_mentions(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('<') {
        let after = &rest[open + 1..];
        match after.find(['<', '>']) {
            Some(end) if after.as_bytes()[end] == b'>' => {
                let span = &after[..end];
                if span.starts_with(['@', '!', '#']) {
                    out.push(format!("<{span}>"));
                }
                rest = &after[end + 1..];
            }
            _ => rest = after,
        }
    }
    out
}

/// The text with Slack's `<…>` spans left out.
fn without_slack_spans(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(open) = rest.find('<') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find(['<', '>']) {
            Some(end) if after.as_bytes()[end] == b'>' => rest = &after[end + 1..],
            _ => {
                out.push('<');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Rocket.Chat reads `@name` and `#channel` after the start of a line, a space or
/// punctuation (not inside a word, as in an e-mail address).
fn rocketchat_mentions(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    for (i, &c) in chars.iter().enumerate() {
        if c != '@' && c != '#' {
            continue;
        }
        if i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_') {
            continue;
        }
        let name: String = chars[i + 1..].iter().take_while(|c| is_name_char(**c)).collect();
        if !name.is_empty() {
            out.push(format!("{c}{name}"));
        }
    }
    out
}

/// `<` directly followed by a letter, a digit or `@!#/`: what Rocket.Chat and Google Chat
/// may read as a link (`<https://…|text>`) or (Google Chat) a `<users/…>` mention. A word
/// joiner after `<` is how hookbridge writes a `<` from a value: no service reads a link
/// across it.
fn angle_specials(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices('<') {
        let after = &text[i + 1..];
        if after.starts_with(|c: char| c.is_alphanumeric() || matches!(c, '@' | '!' | '#' | '/')) {
            let end = after.find('>').map_or(after.len(), |e| e + 1);
            out.push(format!("<{}", &after[..end.min(after.len())]));
        }
    }
    out
}

fn render(title: &str, site: &str, description: &str, actor: &str) -> Vec<(String, Value)> {
    let config = Config::from_yaml(CONFIG).expect("config");
    let doc = json!({
        "id": "e-1", "time": "2026-11-28T09:00:00Z", "operation": "create", "class": "UserRequest",
        "ancestors": ["Ticket"], "key": 1,
        "object": {"ref": "R-1", "title": title, "site": site, "description": description},
        "actor": {"contact": {"friendlyname": actor}},
        "source": {"name": "iTop", "url": "https://itop.example.com/"}
    });
    let event = parse_event(doc.to_string().as_bytes(), None).expect("event");
    render_event(&config, &event, None)
        .matched
        .into_iter()
        .map(|m| {
            let body = m.request.expect("a request").body;
            (m.action, serde_json::from_str(&body).expect("JSON body"))
        })
        .collect()
}

/// What the template itself may make of `site` right after its own `@` or `<users/`: a
/// single user name, or a numeric user id.
fn user_name(site: &str) -> bool {
    !site.is_empty() && site.chars().all(is_name_char) && !GROUPS.iter().any(|g| site.eq_ignore_ascii_case(g))
}

fn check(title: &str, site: &str, description: &str, actor: &str) -> Result<(), TestCaseError> {
    let rendered = render(title, site, description, actor);
    // hookbridge drops the private-use characters it uses internally from every value.
    let site: String = site.chars().filter(|c| !('\u{E000}'..='\u{E004}').contains(c)).collect();
    let site = site.as_str();
    for (action, body) in rendered {
        match action.as_str() {
            "slack" => {
                let mut mrkdwn = Vec::new();
                strings_at(&body, "text", &mut mrkdwn);
                // `<@$this->site$>` may only name one user by id.
                let id = site.len() >= 3
                    && site.starts_with(['U', 'W'])
                    && site.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
                for text in &mrkdwn {
                    for m in slack_mentions(text) {
                        let allowed = m == "<!here>" || m == "<@U0TEMPLATE>" || (id && m == format!("<@{site}>"));
                        prop_assert!(allowed, "slack mention {m} not written by the template in {text:?}");
                    }
                }
            }
            "rocketchat" => {
                let text = body["text"].as_str().unwrap_or_default();
                for m in rocketchat_mentions(text) {
                    let allowed = m == "@tmpl.user" || (user_name(site) && m == format!("@{site}"));
                    prop_assert!(allowed, "rocket.chat mention {m} not written by the template in {text:?}");
                }
                let specials = angle_specials(text);
                prop_assert!(specials.is_empty(), "rocket.chat link syntax from a value: {specials:?} in {text:?}");
            }
            "gchat" => {
                let text = body["text"].as_str().unwrap_or_default();
                let numeric = !site.is_empty() && site.bytes().all(|b| b.is_ascii_digit());
                for m in angle_specials(text) {
                    let allowed = match m.strip_prefix("<users/").and_then(|r| r.strip_suffix('>')) {
                        // A word joiner or a space inside the id: Google Chat reads no user there.
                        Some(id) if id.is_empty() || id.contains(|c: char| c == '\u{2060}' || c.is_whitespace()) => {
                            true
                        }
                        Some(id) => id == "111" || (numeric && id == site),
                        None => false,
                    };
                    prop_assert!(allowed, "google chat mention or link {m} not written by the template in {text:?}");
                }
            }
            _ => {
                // Teams mentions need `msteams.entities`; none may appear.
                prop_assert!(body.pointer("/attachments/0/content/msteams/entities").is_none());
                prop_assert!(!body.to_string().contains("\"mentioned\""));
            }
        }
        if action == "slack" || action == "rocketchat" {
            let mut texts = Vec::new();
            strings_at(&body, "text", &mut texts);
            for text in texts {
                // No plain group mention (`@all`, `@here`…) ever comes from a value; inside a
                // Slack link (`<https://…/@here|x>`) it is part of the URL.
                let text = if action == "slack" { without_slack_spans(&text) } else { text };
                let chars: Vec<char> = text.chars().collect();
                for (i, _) in chars.iter().enumerate().filter(|(_, c)| **c == '@') {
                    let word_before = i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
                    let name: String = chars[i + 1..].iter().take_while(|c| is_name_char(**c)).collect();
                    let group = GROUPS.iter().any(|g| name.eq_ignore_ascii_case(g));
                    prop_assert!(word_before || !group, "{action}: group mention @{name} in {text:?}");
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn values_never_mention_anyone(
        title in hostile(),
        site in hostile(),
        description in hostile(),
        actor in hostile(),
    ) {
        check(&title, &site, &description, &actor)?;
    }
}

/// The cases the issue names, one by one.
#[test]
fn named_attacks_are_text() {
    for (title, site) in [
        ("hi <users/all> @all @here <!channel> <@U024BE7LH>", "!channel"),
        ("&lt;@W0123ABC&gt;", "users/all"),
        ("<p>&lt;@U024BE7LH&gt; <b>@all</b></p>", "all"),
        ("x", "@here"),
        ("x", "U024BE7LH> <!channel"),
    ] {
        check(title, site, "<p>Ping &lt;@U024BE7LH&gt; or <!here></p>", "<!channel>").unwrap();
    }
    // The template's own mentions are kept.
    let out = render("t", "U024BE7LH", "", "a");
    let slack = out.iter().find(|(a, _)| a == "slack").expect("slack").1.clone();
    let text = slack["blocks"][0]["text"]["text"].as_str().expect("text").to_string();
    assert!(text.starts_with("<!here> <@U0TEMPLATE> t "), "{text}");
    assert!(text.contains(" <@U024BE7LH> "), "{text}");
    let out = render("t", "1234", "", "a");
    let gchat = out.iter().find(|(a, _)| a == "gchat").expect("gchat").1["text"].as_str().expect("text").to_string();
    assert!(gchat.starts_with("<users/111> t ") && gchat.contains("<users/1234>"), "{gchat}");
}
