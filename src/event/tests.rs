use super::*;
use serde_json::json;

fn base() -> serde_json::Value {
    json!({"id": "e1", "time": "2026-11-28T09:00:00Z", "operation": "create", "class": "UserRequest", "key": 7, "object": {"ref": "R-7"}})
}

#[test]
fn parses_a_plain_event() {
    let e = parse_event(base().to_string().as_bytes(), None).unwrap();
    assert_eq!(e.key, "7");
    assert_eq!(e.object_key(), "UserRequest::7");
    assert_eq!(e.operation, Operation::Create);
}

#[test]
fn changed_defaults_to_previous_keys() {
    let mut d = base();
    d["operation"] = json!("update");
    d["previous"] = json!({"status": "new", "priority": "2"});
    let e = parse_event(d.to_string().as_bytes(), None).unwrap();
    assert_eq!(e.changed, vec!["status", "priority"]);
}

#[test]
fn structured_cloudevent_fills_missing_fields() {
    let mut data = base();
    data.as_object_mut().unwrap().remove("id");
    data.as_object_mut().unwrap().remove("time");
    let ce = json!({"specversion": "1.0", "id": "ce-1", "time": "2026-11-28T10:00:00Z", "source": "https://itop.example.com/",
        "type": "com.example.object.changed", "datacontenttype": "application/json", "data": data});
    let e = parse_event(ce.to_string().as_bytes(), None).unwrap();
    assert_eq!(e.id, "ce-1");
    assert_eq!(e.time, "2026-11-28T10:00:00Z");
    assert_eq!(e.source.url.as_deref(), Some("https://itop.example.com/"));
}

#[test]
fn binary_cloudevent_headers_fill_missing_fields() {
    let mut data = base();
    data.as_object_mut().unwrap().remove("id");
    let headers = [("ce_specversion", &b"1.0"[..]), ("ce_id", b"bin-1"), ("ce_source", b"itop")];
    let ce = CloudEventHeaders::from_headers(headers.iter().map(|(k, v)| (*k, *v))).unwrap();
    let e = parse_event(data.to_string().as_bytes(), Some(&ce)).unwrap();
    assert_eq!(e.id, "bin-1");
    assert_eq!(e.source.name.as_deref(), Some("itop"));
    assert!(CloudEventHeaders::from_headers([("content-type", &b"x"[..])]).is_none());
}

#[test]
fn bad_messages_are_typed_errors() {
    let cases: [(&[u8], &str); 6] = [
        (b"{\"id\": ", "invalid_json"),
        (b"{'id': 'x'}", "invalid_json"),
        (b"[1, 2]", "schema_violation"),
        (b"\xff\xfe{}", "not_utf8"),
        (b"{\"id\": \"x\"}", "schema_violation"),
        (b"{\"specversion\": \"0.3\", \"data\": {}}", "invalid_cloudevent"),
    ];
    for (bytes, reason) in cases {
        let e = parse_event(bytes, None).unwrap_err();
        assert_eq!(e.reason(), reason, "{:?}: {e}", String::from_utf8_lossy(bytes));
    }
    let e = parse_event(b"{'id': 'x'}", None).unwrap_err();
    assert!(e.to_string().contains("single quotes"), "{e}");
    let mut bad_op = base();
    bad_op["operation"] = json!("upsert");
    let e = parse_event(bad_op.to_string().as_bytes(), None).unwrap_err();
    assert!(e.to_string().contains("operation"), "{e}");
}
