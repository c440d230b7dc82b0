//! The documented log-notification example (examples/log-notification/): "notify Slack when
//! a public log entry is added", rendered as `hookbridge render` shows it.

use hookbridge::parse_event;
use hookbridge::render_event;
use hookbridge::Config;
use serde_json::Value;

fn example() -> (Config, Value) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/log-notification");
    let config = Config::load(std::path::Path::new(&format!("{dir}/config.yaml"))).unwrap();
    let event: Value = serde_json::from_str(&std::fs::read_to_string(format!("{dir}/event.json")).unwrap()).unwrap();
    (config, event)
}

fn render(config: &Config, event: &Value) -> Value {
    let e = parse_event(event.to_string().as_bytes(), None).unwrap();
    serde_json::to_value(render_event(config, &e, None)).unwrap()
}

#[test]
fn a_public_log_entry_is_sent_to_slack() {
    let (config, event) = example();
    let out = render(&config, &event);
    let matched = out["matched"].as_array().unwrap();
    assert_eq!(matched.len(), 1, "{out:#}");
    assert_eq!(matched[0]["trigger"], "public-log-entry");
    assert_eq!(matched[0]["missing_placeholders"], serde_json::json!([]));
    let body: Value = serde_json::from_str(matched[0]["request"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        body["blocks"][0]["text"]["text"],
        ":speech_balloon: *<https://itop.example.com/pages/UI.php?operation=details&amp;class=UserRequest&amp;id=101|R-000101>* \
How to fix the &lt;p&gt; tag in the newsletter\nNew public log entry by Ada Lovelace:\n\
Fixed: the template now closes every &lt;p&gt;.\n*Please* check &amp; confirm."
    );
    assert_eq!(
        body["text"],
        ":speech_balloon: *R-000101* How to fix the &lt;p&gt; tag in the newsletter\nNew public log entry by Ada Lovelace:\n\
Fixed: the template now closes every &lt;p&gt;.\nPlease check &amp; confirm."
    );
}

#[test]
fn the_update_trigger_follows_the_events_log_not_only_changed() {
    let (config, mut event) = example();
    // `changed` names other attributes: the log entry still fires the trigger.
    event["changed"] = serde_json::json!(["status"]);
    assert_eq!(render(&config, &event)["matched"].as_array().unwrap().len(), 1);
    // An entry in another case log does not.
    event["log"]["attribute"] = "private_log".into();
    assert_eq!(render(&config, &event)["matched"].as_array().unwrap().len(), 0);
    // No entry and `changed` without the log: nothing either.
    event.as_object_mut().unwrap().remove("log");
    assert_eq!(render(&config, &event)["matched"].as_array().unwrap().len(), 0);
}
