//! The bodies of the fuzz targets: each takes the fuzzer's bytes, drives one part of
//! hookbridge that reads untrusted or operator text, and panics only on a bug (a crash, or
//! a broken invariant checked here). `fuzz_targets/*.rs` hand them to libFuzzer; the main
//! crate's `tests/fuzz_corpus.rs` runs them over the kept corpus in `fuzz/corpus/`.

use std::sync::OnceLock;

use hookbridge::internals::event::CloudEventHeaders;
use hookbridge::internals::expr::Expression;
use hookbridge::internals::template::{Escape, JsonTemplate, RenderContext, Template};
use hookbridge::render_event;
use hookbridge::Config;
use hookbridge::{parse_event, Event};
use serde_json::{json, Value};

/// Splits the input in two at the first NUL: (first, rest).
fn split(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

/// An event whose attributes hold `value` in every shape a template reads.
fn event_with(value: &str) -> Event {
    let doc = json!({
        "id": "fuzz", "time": "2026-11-28T09:00:00Z", "operation": "update", "class": "UserRequest",
        "ancestors": ["Ticket"], "key": value,
        "object": {
            "ref": "R-1", "title": value, "description": value, "status": value,
            "team_id": {"id": 5, "name": value, "friendlyname": value},
            "public_log": {"entries": [{"date": "d", "user_login": value, "message": value, "message_html": value}]},
            "list": [{"name": value}, value],
        },
        "previous": {"status": value},
        "state": {"attribute": "status", "from": "new", "to": "assigned"},
        "transitions": [{"code": value, "label": value}, {"code": "ev_close", "label": value}],
        "mentions": [{"id": 1, "name": value, "slack": value}],
        "actor": {"user": {"login": value}, "contact": {"name": value, "first_name": value}},
        "source": {"name": "iTop", "url": "https://itop.example.com/"},
        "labels": {"attributes": {"title": value}, "values": {"status": value}},
    });
    parse_event(doc.to_string().as_bytes(), None).expect("the fuzz event is valid")
}

/// Event parsing: plain, structured CloudEvents, and binary mode with headers.
pub fn event_parse(data: &[u8]) {
    let _ = parse_event(data, None);
    let ce = CloudEventHeaders::from_headers([
        ("ce_specversion", &b"1.0"[..]),
        ("ce_id", b"x"),
        ("ce_source", b"https://s/"),
    ]);
    if let Ok(e) = parse_event(data, ce.as_ref()) {
        let _ = e.object_key();
        let _ = e.app_url();
    }
}

/// Config loading and checking, YAML in.
pub fn config_load(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(e) = Config::from_yaml(text) {
        let _ = e.to_string();
    }
}

/// Placeholders: parse a template (first part) and render it with every escape over an
/// event holding the second part.
pub fn placeholder_render(data: &[u8]) {
    let (template, value) = split(data);
    let template = text(template);
    let event = event_with(&text(value));
    let ctx = RenderContext::new(&event, "trigger", "action", event.mentions.first());
    if let Ok(t) = Template::parse(&template) {
        let _ = t.render(&ctx, Escape::None);
        let _ = t.render(&ctx, Escape::Url);
        let header = t.render(&ctx, Escape::Header);
        if !template.contains(['\r', '\n']) {
            assert!(!header.contains(['\r', '\n']), "a value added a header line");
        }
        let _ = t.render(&ctx, Escape::Markup(|v, _, _| v.to_string()));
        let _ = t.render(&ctx, Escape::Form);
        let _ = t.render(&ctx, Escape::Xml);
        let _ = t.render_json(&ctx);
    }
    if let Ok(j) = JsonTemplate::parse_text(&template) {
        let v = j.render(&ctx);
        serde_json::to_string(&v).expect("a rendered payload serialises");
    }
}

fn chat_config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        Config::from_yaml(
            r##"
connections:
  slack: {url: "https://hooks.slack.com/services/T/B/X"}
  rc: {url: "https://chat.example.com/hooks/a/b"}
  gc: {url: "https://chat.googleapis.com/v1/spaces/A/messages?key=k&token=t"}
  teams: {url: "https://x.logic.azure.com/workflows/1/invoke?sig=s"}
presentation:
  Ticket: {list: [title, status], slack: [title, team_id, status], msteams: [title, status]}
actions:
  - {name: slack, type: slack, connection: slack, message: "<!here> *$this->title$* <$this->status$|open> <@$this->status$> $this->html(description)$ $this->head_html(public_log)$", attributes_from: slack, user_info: true, modify_button: true, other_actions: "yes"}
  - {name: rc, type: rocketchat, connection: rc, message: "@$this->status$ _$this->title$_ $this->html(description)$", alias: "$this->title$"}
  - {name: gc, type: google_chat, connection: gc, message: "<users/$this->status$> $this->title$ $this->html(description)$", thread_key: "$this->title$"}
  - {name: teams, type: teams, connection: teams, title: "$this->title$", message: "**$this->title$** $this->html(description)$", attributes_from: msteams, user_info: true, other_actions: "yes"}
  - {name: card, type: teams, format: message_card, connection: teams, title: "$this->title$", message: "$this->html(description)$", attributes_from: list, user_info: true, delete_button: true}
  - {name: mention, type: slack, connection: slack, message: "<@$mentioned->slack$> $mentioned->name$"}
triggers:
  - {name: t, "on": state_enter, state: assigned, class: Ticket, actions: [slack, rc, gc, teams, card]}
  - {name: m, "on": mention, class: Ticket, actions: [mention]}
"##,
        )
        .expect("the fuzz chat config is valid")
    })
}

/// Chat markup conversion: the value goes into every chat format, whose payload must be
/// JSON and carry no group mention the template did not write.
pub fn chat_markup(data: &[u8]) {
    let value = text(data);
    let event = event_with(&value);
    for m in render_event(chat_config(), &event, None).matched {
        let body = m.request.expect("chat actions send").body;
        let payload: Value = serde_json::from_str(&body).expect("chat payloads are JSON");
        if m.r#type == "slack" {
            let text = payload["blocks"][0]["text"]["text"].as_str().unwrap_or_default().to_string();
            let groups = ["<!channel>", "<!everyone>", "<!subteam"];
            for g in groups {
                assert!(!text.contains(g), "a value made {g} in {text:?}");
            }
            let here = text.matches("<!here>").count();
            assert!(here <= usize::from(m.action == "slack"), "a value made <!here> in {text:?}");
        }
        if m.r#type == "google_chat" {
            let text = payload["text"].as_str().unwrap_or_default();
            assert!(!text.contains("<users/all>"), "a value made <users/all> in {text:?}");
        }
    }
}

/// URL masking: never a panic, and the parts it promises to hide are hidden.
pub fn url_mask(data: &[u8]) {
    let raw = text(data);
    let masked = hookbridge::internals::mask::url(&raw);
    let _ = hookbridge::internals::mask::host_only(&raw);
    let _ = hookbridge::internals::mask::url_list(&raw);
    let in_text = hookbridge::internals::mask::urls_in_text(&raw);
    // A credential placed in a token query value or as the password is never shown.
    const SECRET: &str = "Zq9SECRETxw";
    let built = format!("https://user:{SECRET}@h.example/{}?token={SECRET}", raw.replace(['?', '#'], ""));
    let shown = hookbridge::internals::mask::url(&built);
    assert!(!shown.contains(SECRET), "{built:?} shown as {shown:?}");
    // In text, a URL appears as the URL library writes it (no spaces).
    if let Ok(written) = url::Url::parse(&built) {
        let shown = hookbridge::internals::mask::urls_in_text(&format!("error ({written}): {raw}"));
        assert!(!shown.contains(SECRET), "{written} shown as {shown:?}");
    }
    let _ = (masked, in_text);
}

/// CEL: an expression (first part) compiled and evaluated over an event holding the second
/// part, as trigger conditions and callbacks are.
pub fn cel_eval(data: &[u8]) {
    let (source, value) = split(data);
    let Ok(source) = std::str::from_utf8(source) else { return };
    let Ok(expr) = Expression::compile(source, &["event", "object", "previous", "response"]) else { return };
    let event = event_with(&text(value));
    let object = Value::Object(event.object.clone());
    let previous = Value::Object(event.previous.clone());
    let response = json!({"status": 200, "headers": {"content-type": "application/json"}, "body": {"objects": {"a": {"fields": {"ref": text(value)}}}}});
    let vars = [("event", &*event.document), ("object", &object), ("previous", &previous), ("response", &response)];
    let _ = expr.eval(&vars);
    let _ = expr.eval_bool(&vars);
}
