//! A real nats-server with JetStream on the port it picks (`-p -1`, read back from its log)
//! and a temporary store, killed on drop and restartable on the same port and store (so
//! streams and consumers survive).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{exit_within, sigterm};

/// The nats-server binary: `$NATS_SERVER`, then `PATH`, then Debian's location. Missing is
/// a test failure, never a skip: the NATS tests are the only proof the source works.
fn binary() -> PathBuf {
    if let Ok(path) = std::env::var("NATS_SERVER") {
        return PathBuf::from(path);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("nats-server"))
        .chain([PathBuf::from("/usr/sbin/nats-server"), PathBuf::from("/usr/bin/nats-server")])
        .find(|p| p.is_file());
    on_path.unwrap_or_else(|| {
        panic!(
            "nats-server not found (looked at $NATS_SERVER, PATH, /usr/sbin): the NATS tests need a real server; install it with scripts/test-deps.sh (Debian: apt-get install nats-server)"
        )
    })
}

/// A running (or stopped) nats-server.
pub struct NatsServer {
    pub port: u16,
    store: tempfile::TempDir,
    child: Option<Child>,
    extra: Vec<String>,
}

impl NatsServer {
    /// Starts a server with JetStream on a port of its choosing.
    pub async fn start() -> NatsServer {
        NatsServer::start_with(&[]).await
    }

    /// Starts a server with extra command-line arguments (e.g. `--user`, `--pass`).
    pub async fn start_with(extra: &[&str]) -> NatsServer {
        let mut server = NatsServer {
            // Chosen by the server at its first start (see `spawn`).
            port: 0,
            store: tempfile::tempdir().unwrap(),
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        server.spawn().await;
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn log_path(&self) -> PathBuf {
        self.store.path().join("nats-server.log")
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).unwrap();
        let child = Command::new(binary())
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &if self.port == 0 { "-1".to_string() } else { self.port.to_string() },
                "-sd",
            ])
            .arg(self.store.path().join("js"))
            .args(&self.extra)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start nats-server: {e}"));
        self.child = Some(child);
        // Ready when the log says so: JetStream is up only after the store is recovered.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
            let starts = text.matches("Server is ready").count();
            let spawned = text.matches("Starting nats-server").count();
            if spawned > 0 && starts == spawned {
                if self.port == 0 {
                    self.port =
                        listening_port(&text).unwrap_or_else(|| panic!("nats-server reported no port:\n{text}"));
                }
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("nats-server exited with {status}:\n{text}");
            }
            assert!(Instant::now() < deadline, "nats-server not ready after 20 s:\n{text}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the server gracefully (SIGTERM), as an orchestrator would.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            sigterm(&child);
            if exit_within(&mut child, Duration::from_secs(10)).await.is_none() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }

    /// Stops and starts the server on the same port and store.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.spawn().await;
    }

    /// A client, with JetStream.
    pub async fn jetstream(&self) -> async_nats::jetstream::Context {
        let client = async_nats::ConnectOptions::new().max_reconnects(None).connect(self.url()).await.unwrap();
        async_nats::jetstream::new(client)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The client port a nats-server reports: "Listening for client connections on <host>:<port>".
fn listening_port(log: &str) -> Option<u16> {
    let addr = log.lines().find_map(|l| l.split("Listening for client connections on ").nth(1))?;
    addr.trim().rsplit(':').next()?.parse().ok()
}
