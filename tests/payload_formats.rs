//! Webhook payloads as a receiver reads them, per content type: form fields that stay the
//! fields the user wrote whatever the values hold, XML that parses with the values as text,
//! text as written, JSON types kept with their own Content-Type — and what `check` refuses.

mod common;

use common::{event, lines, read_config, with_keys, Receiver, Run};
use serde_json::{json, Value};

const NASTY: &str = "Q&A: 1+1=2? <b>&amp;</b> 'é' \"x\"";
const INJECTION: &str = "x&status=closed&admin=1";

fn form_fields(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

/// Every text node of an XML document, concatenated, and every attribute value.
fn xml_texts(body: &[u8]) -> (String, Vec<String>) {
    let mut reader = quick_xml::Reader::from_reader(body);
    let mut text = String::new();
    let mut attrs = Vec::new();
    let mut buf = Vec::new();
    loop {
        match reader.read_event_into(&mut buf).expect("well-formed XML") {
            quick_xml::events::Event::Eof => break,
            quick_xml::events::Event::Text(t) => text.push_str(&t.unescape().unwrap()),
            quick_xml::events::Event::Start(s) | quick_xml::events::Event::Empty(s) => {
                for a in s.attributes() {
                    attrs.push(a.unwrap().unescape_value().unwrap().into_owned());
                }
            }
            _ => {}
        }
        buf.clear();
    }
    (text, attrs)
}

#[tokio::test]
async fn each_content_type_arrives_encoded_for_it() {
    let rx = Receiver::ok().await;
    let run = Run::new();
    let extra = json!({"object": {"ref": "R-1", "title": NASTY, "note": INJECTION, "priority": 2}});
    run.write_events(&lines(&[event("e1", "1", extra)]));
    let action = |name: &str, content_type: &str, payload: Value| {
        json!({"name": name, "type": "webhook", "connection": "api", "path": format!("/{name}"),
               "content_type": content_type, "payload": payload})
    };
    let config = run.config(
        json!({"retry": {"max_attempts": 1}}),
        json!({
            "connections": {"api": {"url": rx.url("")}},
            "actions": [
                action(
                    "form-map",
                    "application/x-www-form-urlencoded",
                    json!({"ref": "$this->ref$", "title": "$this->title$", "note": "$this->note$"}),
                ),
                action(
                    "form-text",
                    "application/x-www-form-urlencoded",
                    json!("ref=$this->ref$&title=$this->title$&note=$this->note$&fixed=a+b%26c"),
                ),
                action(
                    "xml",
                    "application/xml",
                    json!(r#"<?xml version="1.0"?><ticket ref="$this->ref$"><title>$this->title$</title><!-- fixed --></ticket>"#),
                ),
                action("text", "text/plain; charset=utf-8", json!("Ticket $this->ref$: $this->title$")),
                {
                    "name": "jsonapi", "type": "webhook", "connection": "api", "path": "/jsonapi",
                    "headers": {"Content-Type": "application/vnd.api+json"},
                    "payload": r#"{"data": {"type": "tickets", "id": "$this->ref$", "attributes": {"title": "$this->title$", "priority": "$this->priority$"}}}"#,
                },
            ],
            "triggers": [{"name": "created", "on": "create", "class": "Ticket",
                          "actions": ["form-map", "form-text", "xml", "text", "jsonapi"]}],
        }),
    );
    run.run(&config).await;
    let seen = rx.seen();
    let at = |path: &str| seen.iter().find(|s| s.path == path).unwrap_or_else(|| panic!("nothing at {path}"));

    // Form fields: the receiver reads exactly the fields the user wrote.
    let map = at("/form-map");
    assert_eq!(map.header("content-type"), Some("application/x-www-form-urlencoded"));
    assert_eq!(
        form_fields(&map.body),
        [("ref".into(), "R-1".into()), ("title".into(), NASTY.into()), ("note".into(), INJECTION.into())]
    );
    let text_form = at("/form-text");
    assert_eq!(
        form_fields(&text_form.body),
        [
            ("ref".into(), "R-1".into()),
            ("title".into(), NASTY.into()),
            ("note".into(), INJECTION.into()),
            ("fixed".into(), "a b&c".into())
        ]
    );

    // XML: well-formed, the value back as text, in the element and in the attribute.
    let xml = at("/xml");
    assert_eq!(xml.header("content-type"), Some("application/xml"));
    let (text, attrs) = xml_texts(&xml.body);
    assert_eq!(text, NASTY);
    assert_eq!(attrs, ["R-1"]);

    // Text: as written.
    let plain = at("/text");
    assert_eq!(plain.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(String::from_utf8_lossy(&plain.body), format!("Ticket R-1: {NASTY}"));

    // A JSON type of the user's own: JSON encoding, the header kept as written.
    let api = at("/jsonapi");
    assert_eq!(api.header("content-type"), Some("application/vnd.api+json"));
    assert_eq!(
        api.json(),
        json!({"data": {"type": "tickets", "id": "R-1", "attributes": {"title": NASTY, "priority": 2}}})
    );
    assert!(run.responses().iter().all(|r| r["status"] == "delivered"), "{:?}", run.responses());
}

/// What `check` says of a config with the connections `api` (a plain API) and `itop` and
/// the one action `action`.
fn check(action: Value) -> Vec<String> {
    let config = json!({
        "connections": {
            "api": {"url": "https://api.example.com"},
            "itop": {"url": "https://itop.example.com/webservices/rest.php", "application": "itop"},
        },
        "actions": [action],
    });
    match read_config(&config) {
        Ok(_) => Vec::new(),
        Err(e) => e.to_string().lines().map(str::to_string).collect(),
    }
}

#[test]
fn check_refuses_payloads_that_cannot_be_encoded_safely() {
    let webhook = |content_type: &str, payload: &str| json!({"name": "a", "type": "webhook", "connection": "api", "content_type": content_type, "payload": payload});
    let cases = [
        (
            webhook("application/x-www-form-urlencoded", "title=$this->title$&note=two words"),
            "actions[0].payload: ' ' in the text of a form payload is not form-encoded",
        ),
        (webhook("application/xml", "<$this->tag$>x</$this->tag$>"), "actions[0].payload: $this->tag$ is inside a tag"),
        (webhook("text/xml", "<a><![CDATA[$this->title$]]></a>"), "inside a comment, CDATA section or declaration"),
        (webhook("application/xml", "<a>$this->title$</b>"), "actions[0].payload: not well-formed XML"),
        (
            webhook("application/octet-stream", "$this->title$"),
            "actions[0].content_type: hookbridge cannot encode a payload safely for \"application/octet-stream\"",
        ),
        (
            with_keys(webhook("application/json", "{}"), json!({"headers": {"Content-Type": "text/plain"}})),
            "actions[0].headers.Content-Type: \"text/plain\" contradicts content_type \"application/json\"",
        ),
        (
            json!({"name": "a", "type": "itop", "connection": "itop",
                   "headers": {"Content-Type": "application/json"}, "json_data": {"operation": "list_operations"}}),
            "actions[0].headers.Content-Type: an itop action is sent as application/x-www-form-urlencoded",
        ),
    ];
    for (action, expected) in cases {
        let problems = check(action.clone());
        assert!(problems.iter().any(|p| p.contains(expected)), "{action}\nexpected {expected}\ngot {problems:#?}");
    }
    // The shipped reference config's form action is accepted as a mapping.
    let ok = check(json!({
        "name": "a", "type": "webhook", "connection": "api", "content_type": "application/x-www-form-urlencoded",
        "payload": {"ref": "$this->ref$", "n": 1},
    }));
    assert!(ok.is_empty(), "{ok:?}");
}
