//! Text stays text, HTML is read only where the event declares it: the values of the
//! issue (`How to fix the <p> tag`, `<b>x</b>`) and CKEditor output (nested lists, a table,
//! entities, broken markup) in every chat format, as `hookbridge render` shows them.
//! The expected messages are golden files under tests/golden/text_*.txt;
//! `UPDATE_GOLDEN=1 cargo test --test text_stays_text` rewrites them after a deliberate change.

use hookbridge::parse_event;
use hookbridge::render_event;
use hookbridge::Config;
use serde_json::{json, Value};

const CONFIG: &str = r#"
connections:
  slack: {url: "https://hooks.slack.com/services/T000/B000/XXXX"}
  rocketchat: {url: "https://chat.example.com/hooks/abc/def"}
  google-chat: {url: "https://chat.googleapis.com/v1/spaces/AAA/messages?key=K&token=T"}
  teams: {url: "https://example.webhook.office.com/webhookb2/1/IncomingWebhook/2/3"}
actions:
  - {name: slack, type: slack, connection: slack, message: "$this->title$ / $this->bold$ / $this->html(title)$\n$this->html(description)$"}
  - {name: rocketchat, type: rocketchat, connection: rocketchat, message: "$this->title$ / $this->bold$ / $this->html(title)$\n$this->html(description)$"}
  - {name: google_chat, type: google_chat, connection: google-chat, message: "$this->title$ / $this->bold$ / $this->html(title)$\n$this->html(description)$"}
  - {name: teams, type: teams, connection: teams, title: "$this->title$", message: "$this->bold$ / $this->html(title)$\n$this->html(description)$"}
  - {name: teams-card, type: teams, connection: teams, format: message_card, title: "$this->title$", message: "$this->bold$ / $this->html(title)$\n$this->html(description)$"}
triggers:
  - {name: created, on: create, class: Ticket, actions: [slack, rocketchat, google_chat, teams, teams-card]}
"#;

/// CKEditor output as iTop stores it, with what editors and people get wrong.
const CKEDITOR: &str = "<p>Steps &amp; results:</p><ol><li>Open the <b>printer</b> menu<ul><li>Settings &gt; <i>Network</i></li>\
<li>Reset&nbsp;IP</li></ul></li><li>Print a test page</li></ol><table><thead><tr><th>Model</th><th>Status</th></tr></thead>\
<tbody><tr><td>HP-4</td><td>down</td></tr></tbody></table><p>Caf&eacute; &#9749; &lt;not a tag&gt; <b>unclosed <i>nesting</p>";

fn rendered() -> Vec<(String, Value)> {
    let config = Config::from_yaml(CONFIG).unwrap();
    let event = json!({
        "id": "e1", "time": "2026-11-28T09:00:00Z", "operation": "create", "class": "UserRequest",
        "ancestors": ["Ticket"], "key": 7,
        "object": {"ref": "R-7", "title": "How to fix the <p> tag", "bold": "<b>x</b>", "description": CKEDITOR},
        "formats": {"description": "html"},
        "source": {"name": "iTop", "url": "https://itop.example.com/"}
    });
    let event = parse_event(event.to_string().as_bytes(), None).unwrap();
    let out = serde_json::to_value(render_event(&config, &event, None)).unwrap();
    out["matched"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let body = serde_json::from_str(m["request"]["body"].as_str().unwrap()).unwrap();
            (m["action"].as_str().unwrap().to_string(), body)
        })
        .collect()
}

/// The text a person reads in each service's payload.
fn shown(action: &str, body: &Value) -> String {
    match action {
        "slack" => body["blocks"][0]["text"]["text"].as_str().unwrap().to_string(),
        "rocketchat" | "google_chat" => body["text"].as_str().unwrap().to_string(),
        "teams" => {
            let items = body["attachments"][0]["content"]["body"].as_array().unwrap();
            let mut texts = Vec::new();
            collect_texts(&Value::Array(items.clone()), &mut texts);
            texts.join("\n---\n")
        }
        "teams-card" => format!("{}\n---\n{}", body["title"].as_str().unwrap_or(""), body["text"].as_str().unwrap()),
        other => panic!("{other}"),
    }
}

fn collect_texts(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if m.get("type").and_then(Value::as_str) == Some("TextBlock") {
                out.push(m["text"].as_str().unwrap_or("").to_string());
            }
            m.values().for_each(|x| collect_texts(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| collect_texts(x, out)),
        _ => {}
    }
}

#[test]
fn every_chat_format_keeps_text_as_text_and_reads_declared_html() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut differ = Vec::new();
    for (action, body) in rendered() {
        let got = shown(&action, &body);
        // Whatever the format, the title's tag and the bold value are never lost.
        assert!(got.contains("fix the") && got.contains("tag"), "{action}: {got}");
        assert!(!got.contains("fix the\n"), "{action}: the <p> of a title broke the line: {got}");
        let path = dir.join(format!("text_{action}.txt"));
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_default();
        if want != got {
            differ.push(format!("{action}: {}\n--- expected\n{want}\n--- got\n{got}", path.display()));
        }
    }
    assert!(differ.is_empty(), "{}", differ.join("\n\n"));
}
