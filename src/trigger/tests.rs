use crate::config::Config;
use crate::event::parse_event;
use crate::trigger::match_event;
use serde_json::{json, Value};

const CONFIG: &str = r#"
connections:
  c: {url: "https://example.com/hook"}
actions:
  - {name: a1, type: webhook, connection: c}
  - {name: a2, type: webhook, connection: c}
triggers:
  - {name: on-create, on: create, class: Ticket, actions: [a1, a2]}
  - {name: on-update-any, on: update, class: UserRequest, actions: [a1]}
  - {name: on-update-priority, on: update, class: UserRequest, attributes: [priority], actions: [a1]}
  - {name: on-delete, on: delete, class: UserRequest, actions: [a1]}
  - {name: enter-assigned, on: state_enter, class: UserRequest, state: assigned, actions: [a1]}
  - {name: leave-new, on: state_leave, class: UserRequest, state: new, actions: [a1]}
  - {name: on-mention, on: mention, class: UserRequest, actions: [a2]}
  - {name: urgent-only, on: create, class: UserRequest, condition: 'object.priority == "1"', actions: [a1]}
  - {name: portal-only, on: create, class: UserRequest, context: ["GUI:Portal"], actions: [a1]}
  - {name: other-class, on: create, class: Change, actions: [a1]}
  - {name: bad-condition, on: create, class: UserRequest, condition: 'object.missing_attr > 3', actions: [a1]}
"#;

fn fired(extra: Value) -> Vec<String> {
    let config = Config::from_yaml(CONFIG).unwrap();
    let mut doc = json!({
        "id": "e", "time": "2026-11-28T09:00:00Z", "operation": "create", "class": "UserRequest",
        "ancestors": ["Ticket"], "key": 1, "object": {"priority": "2"}
    });
    for (k, v) in extra.as_object().unwrap() {
        doc[k] = v.clone();
    }
    let event = parse_event(doc.to_string().as_bytes(), None).unwrap();
    let (matches, _errors) = match_event(&config.triggers, &event);
    matches
        .iter()
        .map(|m| {
            let mention = m.mention.map(|i| format!("#{i}")).unwrap_or_default();
            format!("{}/{}{}", config.triggers[m.trigger].name, config.actions[m.action].name, mention)
        })
        .collect()
}

#[test]
fn create_matches_ancestor_class_in_order() {
    assert_eq!(fired(json!({})), vec!["on-create/a1", "on-create/a2"]);
}

#[test]
fn update_watches_attributes() {
    let any = fired(json!({"operation": "update", "previous": {"title": "x"}}));
    assert_eq!(any, vec!["on-update-any/a1"]);
    let prio = fired(json!({"operation": "update", "previous": {"priority": "3"}}));
    assert_eq!(prio, vec!["on-update-any/a1", "on-update-priority/a1"]);
    let explicit = fired(json!({"operation": "update", "changed": ["priority"]}));
    assert_eq!(explicit, vec!["on-update-any/a1", "on-update-priority/a1"]);
}

#[test]
fn delete_fires_on_delete() {
    assert_eq!(fired(json!({"operation": "delete"})), vec!["on-delete/a1"]);
}

#[test]
fn state_enter_and_leave() {
    let f = fired(json!({"operation": "update", "previous": {"status": "new"},
        "state": {"attribute": "status", "from": "new", "to": "assigned"}}));
    assert_eq!(f, vec!["on-update-any/a1", "enter-assigned/a1", "leave-new/a1"]);
    let f = fired(json!({"operation": "update", "state": {"from": "assigned", "to": "resolved"}}));
    assert_eq!(f, vec!["on-update-any/a1"]);
}

#[test]
fn mention_fires_once_per_contact() {
    let f = fired(json!({"operation": "update", "mentions": [{"id": 1}, {"id": 2}]}));
    assert_eq!(f, vec!["on-update-any/a1", "on-mention/a2#0", "on-mention/a2#1"]);
}

#[test]
fn mentions_beyond_max_mentions_are_one_skipped_pair() {
    let yaml = format!("{CONFIG}\ndelivery: {{max_mentions: 3}}\n");
    let config = Config::from_yaml(&yaml).unwrap();
    let mentions: Vec<Value> = (0..250).map(|i| json!({"id": i})).collect();
    let doc = json!({"id": "e", "time": "2026-11-28T09:00:00Z", "operation": "update", "class": "UserRequest",
        "ancestors": ["Ticket"], "key": 1, "object": {}, "mentions": mentions});
    let event = parse_event(doc.to_string().as_bytes(), None).unwrap();
    let (matches, _) = match_event(&config.triggers, &event);
    let mention: Vec<Option<usize>> = matches.iter().filter(|m| m.mention.is_some()).map(|m| m.mention).collect();
    assert_eq!(mention, [Some(0), Some(1), Some(2), Some(3)]);
    let planned: Vec<Option<&str>> =
        crate::render::render_event(&config, &event, Some("a2")).matched.into_iter().map(|m| m.skipped).collect();
    assert_eq!(planned, [None, None, None, Some("too_many_mentions")]);
}

#[test]
fn condition_and_context_filter() {
    let f = fired(json!({"object": {"priority": "1"}, "context": ["GUI:Portal"]}));
    assert_eq!(f, vec!["on-create/a1", "on-create/a2", "urgent-only/a1", "portal-only/a1"]);
}

#[test]
fn a_condition_that_fails_to_evaluate_does_not_fire_and_is_reported() {
    let config = Config::from_yaml(CONFIG).unwrap();
    let doc = json!({"id": "e", "time": "2026-11-28T09:00:00Z", "operation": "create", "class": "UserRequest", "key": 1, "object": {}});
    let event = parse_event(doc.to_string().as_bytes(), None).unwrap();
    let (matches, errors) = match_event(&config.triggers, &event);
    assert!(matches.iter().all(|m| config.triggers[m.trigger].name != "bad-condition"));
    assert!(errors.iter().any(|e| e.trigger == "bad-condition"), "{errors:?}");
}

#[test]
fn log_update_matches_case_log_entries() {
    // A log_update trigger cannot be linked to a webhook action, so its matching is tested directly.
    let t = crate::trigger::Trigger {
        name: "log".into(),
        on: crate::config_file::raw::TriggerOn::LogUpdate,
        class: "Ticket".into(),
        state: None,
        attributes: vec!["public_log".into()],
        condition: None,
        context: vec![],
        actions: vec![0],
        max_mentions: 100,
    };
    let mut doc = json!({"id": "e", "time": "2026-11-28T09:00:00Z", "operation": "update", "class": "UserRequest",
        "ancestors": ["Ticket"], "key": 1, "object": {},
        "log": {"attribute": "public_log", "entry": {"message": "hi"}}});
    let event = parse_event(doc.to_string().as_bytes(), None).unwrap();
    assert_eq!(match_event(std::slice::from_ref(&t), &event).0.len(), 1);
    doc["log"]["attribute"] = json!("private_log");
    let event = parse_event(doc.to_string().as_bytes(), None).unwrap();
    assert!(match_event(std::slice::from_ref(&t), &event).0.is_empty());
}
