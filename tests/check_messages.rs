//! What `check` tells an iTop administrator: every problem in one pass, a wrong field named
//! for its action type, lists that do not fit the action, unknown placeholders, and the
//! unquoted placeholders iTop users write in JSON.

use hookbridge::parse_event;
use hookbridge::render_event;
use hookbridge::Config;
use serde_json::json;

fn problems(yaml: &str) -> Vec<String> {
    match Config::from_yaml(yaml) {
        Ok(_) => Vec::new(),
        Err(e) => e.to_string().lines().map(str::to_string).collect(),
    }
}

#[test]
fn schema_and_semantic_problems_come_in_one_pass() {
    let yaml = r#"
connections:
  slack: {url: "https://hooks.slack.com/services/T0/B0/X"}
  teams: {url: "https://example.webhook.office.com/webhookb2/1/IncomingWebhook/2/3"}
actions:
  - name: slack
    type: slack
    connection: slack
    message: "Ticket $this->ref$ on $current_date$"
    callback: {fields: {x: "response.status"}}
  - {name: slack-list, type: slack, connection: slack, message: "x", attributes_from: msteams}
  - {name: teams-list, type: teams, connection: teams, message: "x", attributes_from: slack}
  - {name: hook, type: webhook, connection: nowhere, payload: '{"a": 1,}'}
presentation:
  Ticket: {list: [ref], slack: [ref], msteams: [ref]}
triggers:
  - {name: t, on: create, class: Ticket, actions: [slack, slack-list, teams-list, hook]}
"#;
    let found = problems(yaml);
    let expect = [
        "actions[0].callback: not a field of a slack action",
        "actions[0].message: placeholder $current_date$: unknown placeholder; iTop has no date or time placeholder; known forms: $this->attribute$",
        "actions[1].attributes_from: \"msteams\" is not a list a slack action shows: none, list or slack",
        "actions[2].attributes_from: \"slack\" is not a list a teams action shows: none, list or msteams",
        "actions[3].connection: no connection named \"nowhere\"",
        "actions[3].payload: line 1 column 9: trailing comma",
    ];
    for e in expect {
        assert!(found.iter().any(|p| p.starts_with(e)), "missing {e:?} in\n{}", found.join("\n"));
    }
}

#[test]
fn an_unquoted_placeholder_in_json_keeps_the_values_type() {
    let yaml = r#"
connections:
  api: {url: "https://api.example.com"}
actions:
  - name: api
    type: webhook
    connection: api
    payload: '{"id": $this->id$, "urgent": $this->urgent$, "title": $this->title$, "note": "$ 5 and $this->ref$"}'
triggers:
  - {name: t, on: create, class: Ticket, actions: [api]}
"#;
    let config = Config::from_yaml(yaml).unwrap();
    let event = json!({"id": "e", "time": "2026-11-28T09:00:00Z", "operation": "create", "class": "Ticket", "key": 42,
        "object": {"ref": "R-42", "urgent": true, "title": "Say \"hi\""}});
    let event = parse_event(event.to_string().as_bytes(), None).unwrap();
    let out = render_event(&config, &event, None);
    let body: serde_json::Value = serde_json::from_str(&out.matched[0].request.as_ref().unwrap().body).unwrap();
    assert_eq!(body, json!({"id": "42", "urgent": true, "title": "Say \"hi\"", "note": "$ 5 and R-42"}));
}

/// Every shipped config passes `check`, with its secrets in the environment of the process,
/// as a deployment would give them.
#[test]
fn shipped_configs_pass_check() {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut checked = 0;
    for entry in std::fs::read_dir(format!("{root}/config")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_hookbridge"))
            .args(["check", "--config", path.to_str().unwrap()])
            .env("REMOTE_ITOP_PASSWORD", "example")
            .env("API_TOKEN", "example")
            .env("SLACK_SIGNING_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
        checked += 1;
    }
    assert!(checked >= 4, "only {checked} configs in config/");
}
