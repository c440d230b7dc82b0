//! What a bridge process writes on stderr, read as it comes (so the pipe never fills and
//! nothing is lost when the process is killed), and the address it reports once its ops
//! server is bound: with `server.listen: "127.0.0.1:0"` the child picks its own port, so no
//! other process can take it between a choice and the bind.

use std::io::{BufRead as _, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A child's output pipe, collected by a thread.
pub struct Output {
    text: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
}

impl Output {
    /// Starts collecting `pipe` (a child's stderr or stdout).
    pub fn collect(pipe: impl Read + Send + 'static) -> Output {
        let text = Arc::new(Mutex::new(String::new()));
        let sink = text.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut t = sink.lock().unwrap();
                t.push_str(&line);
                t.push('\n');
            }
        });
        Output { text, reader: Some(reader) }
    }

    /// What arrived so far.
    pub fn text(&self) -> String {
        self.text.lock().unwrap().clone()
    }

    /// Everything, once the pipe is closed (call after the child exited).
    pub fn finish(&mut self) -> String {
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        self.text()
    }

    /// `http://<addr>` of the ops server, once the bridge has reported it; panics with the
    /// output after `within`.
    pub async fn ops_base(&self, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Some(addr) = ops_addr_in(&self.text()) {
                return format!("http://{addr}");
            }
            assert!(Instant::now() < deadline, "no ops server address reported:\n{}", self.text());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The `addr` field of the bridge's "serving /metrics…" log line, in the JSON or the text
/// log format.
pub fn ops_addr_in(log: &str) -> Option<SocketAddr> {
    let line = log.lines().find(|l| l.contains("serving /metrics"))?;
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
        let addr = v.pointer("/fields/addr").or_else(|| v.get("addr"))?;
        return addr.as_str()?.parse().ok();
    }
    // The text format colours field names when the terminal would show it.
    let line = strip_ansi(line);
    let after = &line[line.find("addr=")? + "addr=".len()..];
    after.split_whitespace().next()?.trim_matches('"').parse().ok()
}

/// `text` without ANSI colour sequences (`ESC [ … m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A TCP port on 127.0.0.1 that nothing listens on, held (bound, never listening) for as
/// long as the value lives: a connection to it is refused, and no other process can take
/// the port meanwhile.
pub struct ClosedPort {
    _socket: tokio::net::TcpSocket,
    /// The port.
    pub port: u16,
}

impl ClosedPort {
    /// Binds a new one.
    pub fn new() -> ClosedPort {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = socket.local_addr().unwrap().port();
        ClosedPort { _socket: socket, port }
    }
}

/// Sends SIGTERM to `child`.
pub fn sigterm(child: &Child) {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success(), "kill -TERM {}", child.id());
}

/// The exit status of `child`, waited for without blocking the test's runtime; `None` when
/// it is still running after `within`.
pub async fn exit_within(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
