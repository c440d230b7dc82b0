//! The bridge as users run it: `hookbridge run --config …` in a subprocess, with its log in a
//! file, `/readyz` and `/metrics` on a free port, stopped by SIGTERM or SIGKILL.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::server::signal;

pub const BIN: &str = env!("CARGO_BIN_EXE_hookbridge");

/// A running bridge process.
pub struct Bridge {
    child: Option<Child>,
    pub log: PathBuf,
    pub metrics_port: u16,
    status: Option<ExitStatus>,
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Bridge {
    /// Writes `yaml` as `<name>.yaml` in `dir` and runs the bridge on it. `yaml` may use
    /// `{metrics}`, replaced by a free port for `server.listen`.
    pub fn start(dir: &Path, name: &str, yaml: &str, env: &[(&str, &str)]) -> Bridge {
        let metrics_port = free_port();
        let config = dir.join(format!("{name}.yaml"));
        std::fs::write(&config, yaml.replace("{metrics}", &metrics_port.to_string())).unwrap();
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(&config)
            .env("HOOKBRIDGE_LOG", "info,hookbridge=debug,async_nats=warn")
            .envs(env.iter().copied())
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap();
        Bridge { child: Some(child), log, metrics_port, status: None }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `/readyz` answers 200; panics with the log if the bridge exits first.
    pub async fn wait_ready(&mut self) {
        let url = format!("http://127.0.0.1:{}/readyz", self.metrics_port);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = reqwest::get(&url).await {
                if r.status() == 200 {
                    return;
                }
            }
            if let Some(status) = self.try_status() {
                panic!("bridge exited with {status} before being ready:\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "bridge not ready after 20 s:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://127.0.0.1:{}/metrics", self.metrics_port)).await.unwrap().text().await.unwrap()
    }

    /// The value of one sample, by its exact name and labels as printed.
    pub async fn metric(&self, sample: &str) -> Option<f64> {
        let text = self.metrics().await;
        text.lines().find_map(|l| l.strip_prefix(sample).and_then(|rest| rest.trim().parse().ok()))
    }

    /// The exit status, if the process has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.try_status()
    }

    fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Some(child) = self.child.as_mut() {
                self.status = child.try_wait().unwrap();
            }
        }
        self.status
    }

    /// Waits for the process to exit by itself.
    pub async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_status() {
                return status;
            }
            assert!(Instant::now() < deadline, "bridge still running after {limit:?}:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then waits for the drain to finish.
    pub async fn terminate(&mut self, limit: Duration) -> ExitStatus {
        if self.try_status().is_none() {
            signal(self.child.as_ref().unwrap().id(), "TERM");
        }
        self.wait_exit(limit).await
    }

    /// SIGKILL: a crash at an arbitrary instant.
    pub fn kill9(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            self.status = child.wait().ok();
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.kill9();
    }
}
