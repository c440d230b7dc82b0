//! What the benchmark sends through hookbridge: ~1 KiB ticket events, and a config with three
//! triggers of which two match every event (a webhook with ~15 placeholders and a Slack
//! notification), results and dead letters going back to the broker.

use std::net::SocketAddr;

use serde_json::json;

/// Placeholder-free marker before the publish time, in both actions' bodies; the receiver
/// looks for it.
pub const PUBLISHED_KEY: &[u8] = b"published_us";
/// Marker before the event's sequence number.
pub const SEQ_KEY: &[u8] = b"bench_seq";
/// The sequence number of the request the load generator sends: outside every run's range,
/// so the receiver does the same work for it but records nothing.
pub const CEILING_SEQ: u64 = 999_999_999_999;

/// Consumer group (Kafka) and durable consumer (NATS) of the bridge.
pub const GROUP: &str = "hookbridge-bench";

/// Microseconds since the Unix epoch: the harness publishes and receives, so one clock.
pub fn now_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970").as_micros() as u64
}

/// `UserRequest::<object>`: the key of the object, as hookbridge keys its results.
pub fn object_key(object: u64) -> String {
    format!("UserRequest::{object}")
}

/// One `create` event of a UserRequest (1 KiB of JSON, give or take a few bytes).
pub fn event(seq: u64, object: u64, published_us: u64) -> Vec<u8> {
    let caller = object % 997;
    let e = json!({
        "id": format!("evt-{seq:012}"),
        "time": "2026-11-28T09:05:00Z",
        "operation": "create",
        "class": "UserRequest",
        "ancestors": ["Ticket"],
        "key": object,
        "object": {
            "ref": format!("R-{object:06}"),
            "title": format!("Printer on floor {} is \"jammed\" – ünïcödé", object % 12),
            "status": "assigned",
            "priority": "1",
            "urgency": "2",
            "impact": "1",
            "origin": "portal",
            "org_name": "Demo Corporation",
            "caller_id": {"id": caller, "name": format!("Caller {caller}"), "email": format!("caller{caller}@example.com")},
            "agent_id": {"id": 12, "name": "Ada Lovelace", "email": "ada@example.com"},
            "team_id": {"id": 5, "name": "Service Desk", "slack": "#service-desk"},
            "description": "<p>Since this morning the printer on the third floor jams on every second page, \
                since the paper tray was replaced. Please have a look today.</p>",
            "bench_seq": seq,
            "published_us": published_us,
        },
        "context": ["REST/JSON"],
        "source": {"name": "iTop", "url": "https://itop.example.com/"},
        "labels": {"attributes": {"ref": "Reference", "title": "Title", "priority": "Priority"},
                   "values": {"status": "Assigned", "priority": "Critical"}},
        "actor": {"user": {"login": "alovelace"},
                  "contact": {"id": 12, "name": "Lovelace", "first_name": "Ada", "email": "ada@example.com"}},
    });
    serde_json::to_vec(&e).expect("an event serializes")
}

/// Where hookbridge reads from and writes to.
pub enum Broker<'a> {
    /// NATS JetStream at this URL: stream CHANGES, results and dead letters on subjects.
    Nats { url: &'a str },
    /// Kafka at these bootstrap servers: topic `changes`, results and dead letters on topics;
    /// librdkafka properties of hookbridge's clients (`source.properties`).
    Kafka { brokers: &'a str, properties: Vec<(String, String)> },
}

/// Delivery settings of a run.
pub struct Delivery {
    /// `delivery.concurrency`.
    pub concurrency: usize,
    /// `max_in_flight` of each connection (hookbridge's default is concurrency / 8).
    pub max_in_flight: Option<usize>,
}

/// The config of a run: source, destinations, the two connections to the receiver at
/// `receiver`, the actions and triggers.
pub fn config(broker: &Broker, receiver: SocketAddr, delivery: &Delivery, listen: u16) -> String {
    let (source, responses, dead_letter) = match broker {
        Broker::Nats { url } => (
            format!(
                "source:\n  type: nats\n  url: \"{url}\"\n  stream: CHANGES\n  subjects: [\"changes.>\"]\n  consumer: {GROUP}\n"
            ),
            "{type: nats, subject: hookbridge.responses}",
            "{type: nats, subject: hookbridge.dead-letter}",
        ),
        Broker::Kafka { brokers, properties } => (
            format!(
                "source:\n  type: kafka\n  brokers: [\"{brokers}\"]\n  group_id: {GROUP}\n  topics: [changes]\n  retry_topic: changes.retry\n  properties: {}\n",
                serde_json::to_string(&properties.iter().cloned().collect::<std::collections::BTreeMap<String, String>>())
                    .expect("properties serialize")
            ),
            "{type: kafka, topic: responses}",
            "{type: kafka, topic: dead-letter}",
        ),
    };
    let in_flight = delivery.max_in_flight.map(|n| format!(", max_in_flight: {n}")).unwrap_or_default();
    format!(
        r#"{source}responses: {responses}
dead_letter: {dead_letter}
server: {{listen: "127.0.0.1:{listen}"}}
delivery:
  concurrency: {concurrency}
  timeout: 10s
  allow_private_networks: true
  shutdown_timeout: 30s
connections:
  ticket-api: {{application: generic, url: "http://{receiver}/hook", headers: {{x-source: hookbridge}}{in_flight}}}
  slack-ops: {{application: slack, url: "http://{receiver}/slack"{in_flight}}}
actions:
  - name: ticket-webhook
    type: webhook
    connection: ticket-api
    path: "/tickets/$this->ref$"
    payload: |
      {{"event": "$trigger->name$", "action": "$action->name$", "id": "$this->id$", "ref": "$this->ref$",
       "title": "$this->title$", "status": "$this->label(status)$", "priority": "$this->priority$",
       "caller": "$this->caller_id->name$", "caller_email": "$this->caller_id->email$",
       "team": "$this->team_id->name$", "agent": "$this->agent_id->name$", "org": "$this->org_name$",
       "link": "$this->url()$", "by": "$current_contact->email$", "description": "$this->text(description)$",
       "bench_seq": "$this->bench_seq$", "published_us": "$this->published_us$"}}
  - name: slack-ops
    type: slack
    connection: slack-ops
    message: "Ticket $this->ref$ ($this->title$) for $this->caller_id->name$ is now *$this->label(status)$* (published_us $this->published_us$, bench_seq $this->bench_seq$)"
    attributes_from: slack
triggers:
  - name: ticket-created
    on: create
    class: Ticket
    actions: [ticket-webhook]
  - name: urgent-ticket-created
    on: create
    class: UserRequest
    condition: 'object.priority == "1"'
    actions: [slack-ops]
  - name: title-changed
    on: update
    class: UserRequest
    attributes: [title]
    actions: [ticket-webhook]
presentation:
  UserRequest: {{slack: [ref, title, priority]}}
"#,
        concurrency = delivery.concurrency,
    )
}
