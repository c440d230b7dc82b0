use super::*;

const BASE: &str = r#"
connections:
  c: {url: "https://example.com/hook"}
actions:
  - {name: a, type: webhook, connection: c, payload: '{"ref": "$this->ref$"}'}
triggers:
  - {name: t, on: create, class: UserRequest, actions: [a]}
"#;

fn problems(yaml: &str) -> Vec<String> {
    match Config::from_yaml(yaml) {
        Ok(_) => vec![],
        Err(ConfigError::Invalid { problems }) => problems.iter().map(|p| p.to_string()).collect(),
        Err(e) => vec![e.to_string()],
    }
}

fn assert_problem(yaml: &str, place: &str, needle: &str) {
    let found = problems(yaml);
    assert!(
        found.iter().any(|p| p.starts_with(&format!("{place}:")) && p.contains(needle)),
        "expected `{place}: …{needle}…`, got {found:#?}"
    );
}

#[test]
fn base_config_is_valid() {
    assert!(problems(BASE).is_empty(), "{:?}", problems(BASE));
}

#[test]
fn log_update_trigger_cannot_run_a_webhook_action() {
    let yaml = BASE.replace("on: create", "on: log_update");
    assert_problem(&yaml, "triggers[0].actions[0]", "reserved for e-mail");
}

#[test]
fn single_quoted_payload_is_refused_with_its_place() {
    let yaml = BASE.replace(r#"'{"ref": "$this->ref$"}'"#, r#""{'ref': '$this->ref$'}""#);
    assert_problem(&yaml, "actions[0].payload", "line 1 column 2: key must be a string (single quotes are not JSON)");
}

#[test]
fn dangling_references_are_refused() {
    assert_problem(
        &BASE.replace("connection: c", "connection: nope"),
        "actions[0].connection",
        "no connection named \"nope\"",
    );
    assert_problem(&BASE.replace("actions: [a]", "actions: [a, b]"), "triggers[0].actions[1]", "no action named \"b\"");
    let yaml = BASE.replace("connection: c,", "connection: c, status: test, test_connection: missing,");
    assert_problem(&yaml, "actions[0].test_connection", "no connection named \"missing\"");
}

#[test]
fn misspelt_keys_are_refused_with_their_place() {
    assert_problem(&BASE.replace("url:", "urll:"), "connections.c", "urll");
    assert_problem(&format!("{BASE}\ndelivry: {{}}\n"), "(top level)", "delivry");
    assert_problem(&BASE.replace("on: create", "on: create, clas: X"), "triggers[0]", "clas");
    assert_problem(&format!("{BASE}\nsource: {{type: file, pth: x}}\n"), "source", "pth");
}

#[test]
fn fields_of_another_action_type_are_refused() {
    assert_problem(&BASE.replace("type: webhook", "type: webhook, alias: x"), "actions[0].alias", "");
}

#[test]
fn state_triggers_need_a_state() {
    assert_problem(&BASE.replace("on: create", "on: state_enter"), "triggers[0].state", "required for on: state_enter");
    assert!(problems(&BASE.replace("on: create", "on: state_leave, state: new")).is_empty());
}

#[test]
fn invalid_cel_is_refused() {
    assert_problem(
        &BASE.replace("on: create", "on: create, condition: 'object.priority =='"),
        "triggers[0].condition",
        "invalid CEL expression",
    );
}

#[test]
fn other_actions_codes_only_with_specify() {
    let yaml = r#"
connections: {c: {url: "https://hooks.slack.com/services/T/B/X"}}
actions:
  - {name: s, type: slack, connection: c, message: hi, other_actions: "yes", other_actions_codes: [ev_close]}
triggers: [{name: t, on: create, class: X, actions: [s]}]
"#;
    assert_problem(yaml, "actions[0].other_actions_codes", "only with other_actions: specify");
    let ok = yaml.replace("\"yes\"", "specify");
    assert!(problems(&ok).is_empty(), "{:?}", problems(&ok));
}

#[test]
fn every_error_is_reported_at_once() {
    let yaml = BASE.replace("connection: c", "connection: nope").replace("on: create", "on: state_enter");
    assert!(problems(&yaml).len() >= 2, "{:?}", problems(&yaml));
}

/// Tests never change the process's environment (other tests read it at the same time):
/// they use variables every environment has, and names no environment has.
fn home() -> String {
    std::env::var("HOME").expect("HOME is set")
}

#[test]
fn env_expansion_and_secrets() {
    let c = Config::from_yaml(&BASE.replace("example.com/hook", "example.com${HOME}/hook")).unwrap();
    assert!(format!("{:?}", c.connections[0].url).contains(&home()), "{:?}", c.connections[0].url);
    assert_problem(
        &BASE.replace("example.com", "${HOOKBRIDGE_T_UNSET_VAR}"),
        "connections.c.url",
        "HOOKBRIDGE_T_UNSET_VAR is not set",
    );
    let yaml = BASE.replace(
        r#"url: "https://example.com/hook"}"#,
        r#"url: "https://example.com/hook", auth: {type: bearer, token: {env: HOOKBRIDGE_T_NO_TOKEN}}}"#,
    );
    assert_problem(&yaml, "connections.c.auth.token", "HOOKBRIDGE_T_NO_TOKEN is not set");
}

#[test]
fn bad_placeholders_and_colours_are_refused() {
    assert_problem(&BASE.replace("$this->ref$", "$this->html(ref$"), "actions[0].payload", "$this->html(ref$");
    let yaml = r#"
connections: {c: {url: "https://example.com/x"}}
actions: [{name: t, type: teams, connection: c, message: hi, highlight_color: "red"}]
triggers: [{name: t, on: create, class: X, actions: [t]}]
"#;
    assert_problem(yaml, "actions[0].highlight_color", "not a hex colour");
}

#[test]
fn nats_destinations_may_carry_their_own_credentials() {
    let yaml = format!(
        "{BASE}\nresponses: {{type: nats, subject: hookbridge.responses, url: \"nats://127.0.0.1:4222\", credentials: {{user: bridge, password: {{env: HOME}}}}}}\n"
    );
    assert!(problems(&yaml).is_empty(), "{:?}", problems(&yaml));
    let unset = yaml.replace("env: HOME", "env: HOOKBRIDGE_T_NATS_UNSET");
    assert_problem(&unset, "responses.credentials.password", "HOOKBRIDGE_T_NATS_UNSET is not set");
    let bad = yaml.replace("user: bridge", "usr: bridge");
    assert_problem(&bad, "responses", "usr");
}

#[test]
fn nats_retry_stream_and_subject_default_from_the_stream_and_consumer() {
    let source = "source: {type: nats, url: \"nats://127.0.0.1:4222\", stream: CHANGES, consumer: bridge-a}";
    let config = Config::from_yaml(&format!("{BASE}\n{source}\n")).unwrap();
    let Input::Nats(nats) = &config.source else { panic!("not nats") };
    assert_eq!(
        (nats.retry_stream.as_str(), nats.retry_subject.as_str()),
        ("CHANGES_RETRY", "hookbridge.retry.bridge-a")
    );
    let own = source.replace("}", ", retry_stream: RETRIES, retry_subject: my.retries}");
    let config = Config::from_yaml(&format!("{BASE}\n{own}\n")).unwrap();
    let Input::Nats(nats) = &config.source else { panic!("not nats") };
    assert_eq!((nats.retry_stream.as_str(), nats.retry_subject.as_str()), ("RETRIES", "my.retries"));
}

#[test]
fn nats_names_follow_the_nats_rules() {
    let source = |extra: &str| {
        format!(
            "{BASE}\nsource: {{type: nats, url: \"nats://127.0.0.1:4222\", stream: CHANGES, subjects: [\"changes.>\"]{extra}}}\nresponses: {{type: nats, subject: hookbridge.responses}}\n"
        )
    };
    assert!(problems(&source("")).is_empty(), "{:?}", problems(&source("")));
    assert_problem(&source(", retry_stream: \"A.B\""), "source.retry_stream", "'.' is not allowed");
    assert_problem(&source(", retry_stream: \"a b\""), "source.retry_stream", "not a valid NATS name");
    assert_problem(&source(", retry_stream: CHANGES"), "source.retry_stream", "not the source stream");
    assert_problem(&source(", consumer: \"x/y\""), "source.consumer", "'/' is not allowed");
    assert_problem(&source(", retry_subject: \"retry.>\""), "source.retry_subject", "no wildcards");
    assert_problem(&source(", retry_subject: \"a..b\""), "source.retry_subject", "not a subject one can publish to");
    assert_problem(&source(", retry_subject: changes.retry"), "source.retry_subject", "matches the source filter");
    assert_problem(
        &source(", retry_subject: hookbridge.responses"),
        "source.retry_subject",
        "also a results or dead-letter subject",
    );
    // A stream name with a dot would make the default retry stream invalid too: reported once,
    // where the user wrote it.
    let dotted = source("").replace("stream: CHANGES", "stream: CHAN.GES");
    assert_problem(&dotted, "source.stream", "'.' is not allowed");
    assert!(!problems(&dotted).iter().any(|p| p.starts_with("source.retry")), "{:?}", problems(&dotted));
}

#[test]
fn a_destination_takes_what_it_does_not_give_from_a_source_of_its_kind() {
    let kafka = r#"source: {type: kafka, brokers: ["k1:9092"], topics: [changes], properties: {security.protocol: ssl, fetch.wait.max.ms: "10"}}"#;
    let config = Config::from_yaml(&format!(
        "{BASE}\n{kafka}\nresponses: {{type: kafka, topic: results}}\ndead_letter: {{type: kafka, topic: dead, brokers: [\"k2:9092\"], properties: {{acks: all}}}}\n"
    ))
    .unwrap();
    let (Output::Kafka(responses), Output::Kafka(dead)) = (&config.responses, &config.dead_letter) else {
        panic!("kafka outputs")
    };
    assert_eq!(responses.brokers, ["k1:9092"]);
    assert_eq!(responses.properties.get("security.protocol").map(String::as_str), Some("ssl"));
    assert_eq!(responses.properties.get("fetch.wait.max.ms"), None, "a consumer's setting is not a producer's");
    assert_eq!(dead.brokers, ["k2:9092"]);
    assert_eq!(dead.properties.keys().collect::<Vec<_>>(), ["acks"]);

    let nats = r#"source: {type: nats, url: "nats://n1:4222", stream: CHANGES, credentials: {user: u, password: {env: HOME}}}"#;
    let config =
        Config::from_yaml(&format!("{BASE}\n{nats}\nresponses: {{type: nats, subject: results}}\ndead_letter: {{type: nats, subject: dead, url: \"nats://n2:4222\"}}\n"))
            .unwrap();
    let (Output::Nats(responses), Output::Nats(dead)) = (&config.responses, &config.dead_letter) else {
        panic!("nats outputs")
    };
    assert_eq!((responses.url.as_str(), dead.url.as_str()), ("nats://n1:4222", "nats://n2:4222"));
    assert!(dead.credentials.user.is_some(), "a NATS source's credentials are reused for another URL");
}

#[test]
fn a_destination_with_no_broker_to_take_is_a_check_error() {
    let file = r#"source: {type: file, path: "-"}"#;
    assert_problem(
        &format!("{BASE}\n{file}\nresponses: {{type: kafka, topic: results}}\n"),
        "responses.brokers",
        "the source is not Kafka",
    );
    assert_problem(
        &format!("{BASE}\n{file}\ndead_letter: {{type: nats, subject: dead}}\n"),
        "dead_letter.url",
        "the source is not NATS",
    );
}
