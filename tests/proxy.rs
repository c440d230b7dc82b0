//! Proxies and the destination policy, end to end on the binary: the proxy variables of the
//! environment are ignored, and an explicit `delivery.proxy` only ever carries destinations
//! that passed the policy. The proxy is a real TCP server on port 0 that records what it is
//! asked (absolute-URI requests and CONNECT tunnels) and answers itself; the proxy
//! variables are set for the child process only.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{event, lines, load, read_config, with_keys, Receiver, Run};
use serde_json::{json, Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_hookbridge");

/// A documentation address (TEST-NET-3): public-looking for the policy, and never routed,
/// so nothing leaves the machine even if a request went direct.
const PUBLIC_LOOKING: &str = "203.0.113.10";

/// One request the proxy was asked to carry.
#[derive(Debug, Clone)]
struct Asked {
    /// `POST http://host/path HTTP/1.1` or `CONNECT host:443 HTTP/1.1`.
    request_line: String,
    /// The `Proxy-Authorization` header, if any.
    proxy_authorization: Option<String>,
}

/// A forward proxy that answers everything itself: 200 to absolute-URI requests, 403 to
/// CONNECT (the tunnel is refused, so no TLS destination is ever reached).
struct RecordingProxy {
    url: String,
    asked: Arc<Mutex<Vec<Asked>>>,
}

impl RecordingProxy {
    async fn start() -> RecordingProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let asked = Arc::new(Mutex::new(Vec::new()));
        let record = asked.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let record = record.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                    let mut head_lines = head.split("\r\n");
                    let request_line = head_lines.next().unwrap_or_default().to_string();
                    let header = |name: &str| {
                        head.split("\r\n").find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
                        })
                    };
                    let proxy_authorization = header("proxy-authorization");
                    let length: usize = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
                    record.lock().unwrap().push(Asked { request_line: request_line.clone(), proxy_authorization });
                    if request_line.starts_with("CONNECT ") {
                        let _ = stream.write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n").await;
                        return;
                    }
                    while buf.len() < head_end + length {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let _ =
                        stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok").await;
                });
            }
        });
        RecordingProxy { url, asked }
    }

    fn asked(&self) -> Vec<Asked> {
        self.asked.lock().unwrap().clone()
    }
}

/// Runs the binary over one event with `delivery` (beside one attempt per delivery) and one
/// webhook action per connection (`name`, URL), every proxy variable of the environment
/// pointing at `env_proxy`; returns the results by action.
async fn run_bridge(delivery: Value, connections: &[(&str, String)], env_proxy: &str) -> Vec<Value> {
    let run = Run::new();
    run.write_events(&lines(&[event("e-1", "1", json!({}))]));
    let names: Vec<&str> = connections.iter().map(|(name, _)| *name).collect();
    let config = run.files_config(
        with_keys(json!({"retry": {"max_attempts": 1}}), delivery),
        json!({
            "connections": connections.iter().map(|(name, url)| (name.to_string(), json!({"url": url}))).collect::<Map<_, _>>(),
            "actions": names.iter().map(|name| {
                json!({"name": name, "type": "webhook", "connection": name, "payload": r#"{"ref": "$this->ref$"}"#})
            }).collect::<Vec<_>>(),
            "triggers": [{"name": "created", "on": "create", "class": "Ticket", "actions": names}],
        }),
    );
    let mut command = tokio::process::Command::new(BIN);
    command.args(["run", "--config", &run.write_config(&config)]).env_remove("NO_PROXY").env_remove("no_proxy");
    for var in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"] {
        command.env(var, env_proxy);
    }
    let output =
        tokio::time::timeout(Duration::from_secs(60), command.output()).await.expect("bridge finished").unwrap();
    assert!(output.status.success(), "{}\n{config:#}", String::from_utf8_lossy(&output.stderr));
    let mut results = run.responses();
    results.sort_by_key(|r| r["action"].as_str().unwrap_or_default().to_string());
    results
}

fn status_of<'a>(results: &'a [Value], action: &str) -> &'a Value {
    results.iter().find(|r| r["action"] == action).unwrap_or_else(|| panic!("no result for {action}: {results:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_proxy_variables_are_ignored() {
    let proxy = RecordingProxy::start().await;
    let receiver = Receiver::ok().await;
    let port = receiver.addr.port();
    let results = run_bridge(
        json!({"allow_private_networks": true}),
        &[
            ("by_address", format!("http://127.0.0.1:{port}/direct")),
            ("by_name", format!("http://localhost:{port}/named")),
        ],
        &proxy.url,
    )
    .await;
    assert!(proxy.asked().is_empty(), "the environment's proxy was used: {:?}", proxy.asked());
    let mut paths: Vec<String> = receiver.seen().iter().map(|s| s.path.clone()).collect();
    paths.sort();
    assert_eq!(paths, ["/direct", "/named"]);
    for action in ["by_address", "by_name"] {
        assert_eq!(status_of(&results, action)["status"], "delivered", "{results:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicit_proxy_carries_only_destinations_the_policy_allows() {
    let proxy = RecordingProxy::start().await;
    let receiver = Receiver::ok().await;
    let port = receiver.addr.port();
    let delivery = json!({"allow_private_networks": false, "proxy": {"url": proxy.url}});
    let results = run_bridge(
        delivery,
        &[
            ("internal_admin", format!("http://localhost:{port}/internal-admin")),
            ("public_http", format!("http://{PUBLIC_LOOKING}/hook")),
            ("public_tls", format!("https://{PUBLIC_LOOKING}/secure")),
        ],
        "http://127.0.0.1:9/",
    )
    .await;
    let asked: Vec<String> = proxy.asked().into_iter().map(|a| a.request_line).collect();
    // The private destination never reached the proxy (nor the receiver behind it).
    assert!(asked.iter().all(|l| !l.contains("localhost") && !l.contains("127.0.0.1")), "{asked:?}");
    assert!(receiver.seen().is_empty());
    let refused = status_of(&results, "internal_admin");
    assert_eq!(refused["status"], "failed");
    assert_eq!(refused["error"]["reason"], "destination_refused", "{refused:#}");
    assert!(refused["error"]["detail"].as_str().unwrap().contains("127.0.0.1"), "{refused:#}");
    // The allowed ones went through the proxy: plain HTTP as an absolute URI, TLS as a tunnel.
    assert!(asked.contains(&format!("POST http://{PUBLIC_LOOKING}/hook HTTP/1.1")), "{asked:?}");
    assert!(asked.contains(&format!("CONNECT {PUBLIC_LOOKING}:443 HTTP/1.1")), "{asked:?}");
    assert_eq!(status_of(&results, "public_http")["status"], "delivered", "{results:#?}");
    assert_eq!(status_of(&results, "public_tls")["status"], "failed", "{results:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_proxy_hosts_go_direct_and_proxy_credentials_are_sent() {
    let proxy = RecordingProxy::start().await;
    let receiver = Receiver::ok().await;
    let port = receiver.addr.port();
    let proxy_url = proxy.url.replace("http://", "http://bridge:pr0xy-pw@");
    let delivery = json!({"allow_private_networks": true, "proxy": {"url": proxy_url, "no_proxy": ["localhost"]}});
    let results = run_bridge(
        delivery,
        &[
            ("direct", format!("http://localhost:{port}/direct")),
            ("proxied", format!("http://127.0.0.1:{port}/proxied")),
        ],
        "http://127.0.0.1:9/",
    )
    .await;
    let asked = proxy.asked();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0].request_line, format!("POST http://127.0.0.1:{port}/proxied HTTP/1.1"));
    // base64("bridge:pr0xy-pw")
    assert_eq!(asked[0].proxy_authorization.as_deref(), Some("Basic YnJpZGdlOnByMHh5LXB3"));
    assert_eq!(receiver.seen().iter().map(|s| s.path.as_str()).collect::<Vec<_>>(), ["/direct"]);
    for action in ["direct", "proxied"] {
        assert_eq!(status_of(&results, action)["status"], "delivered", "{results:#?}");
    }
}

#[test]
fn proxy_settings_are_checked_at_load() {
    let config = |proxy: Value| {
        json!({
            "connections": {"c": {"url": "https://example.com/x"}},
            "actions": [{"name": "a", "type": "webhook", "connection": "c", "payload": "{}"}],
            "triggers": [{"name": "t", "on": "create", "class": "X", "actions": ["a"]}],
            "delivery": {"proxy": proxy},
        })
    };
    let bad =
        config(json!({"url": "ftp://user:hunter2@proxy:21", "no_proxy": ["10.0.0.0/40", "ok.example", "bad host"]}));
    let err = read_config(&bad).unwrap_err().to_string();
    assert!(err.contains("delivery.proxy.url"), "{err}");
    assert!(err.contains("delivery.proxy.no_proxy[0]") && err.contains("delivery.proxy.no_proxy[2]"), "{err}");
    assert!(!err.contains("no_proxy[1]"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    let good =
        config(json!({"url": "http://proxy.internal:3128", "no_proxy": [".svc.cluster.local", "10.0.0.0/8", "::1"]}));
    load(&good);
}
