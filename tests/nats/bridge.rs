//! The bridge as users run it: `hookbridge run --config …` in a subprocess, with its log in a
//! file, `/readyz` and `/metrics` on the port it picks and reports, stopped by SIGTERM or
//! SIGKILL.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{exit_within, sigterm};

pub const BIN: &str = env!("CARGO_BIN_EXE_hookbridge");

/// A running bridge process.
pub struct Bridge {
    child: Option<Child>,
    pub log: PathBuf,
    status: Option<ExitStatus>,
}

impl Bridge {
    /// Writes `config` as `<name>.yaml` in `dir` and runs the bridge on it. With
    /// `server.listen: "127.0.0.1:0"` the bridge picks its ops port and logs it.
    pub fn start(dir: &Path, name: &str, config: &Value, env: &[(&str, &str)]) -> Bridge {
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(&path, config.to_string()).unwrap();
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(&path)
            .env("HOOKBRIDGE_LOG", "info,hookbridge=debug,async_nats=warn")
            .envs(env.iter().copied())
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap();
        Bridge { child: Some(child), log, status: None }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `http://<addr>` of the ops server, once the bridge has reported it in its log.
    fn ops_base(&self) -> Option<String> {
        crate::common::ops_addr_in(&self.log()).map(|addr| format!("http://{addr}"))
    }

    /// Waits until `/readyz` answers 200; panics with the log if the bridge exits first.
    pub async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(base) = self.ops_base() {
                if let Ok(r) = reqwest::get(format!("{base}/readyz")).await {
                    if r.status() == 200 {
                        return;
                    }
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
        let base = self.ops_base().unwrap_or_else(|| panic!("no ops server address in the log:\n{}", self.log()));
        reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap()
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
        if self.status.is_none() {
            self.status = exit_within(self.child.as_mut().unwrap(), limit).await;
        }
        self.status.unwrap_or_else(|| panic!("bridge still running after {limit:?}:\n{}", self.log()))
    }

    /// SIGTERM, then waits for the drain to finish.
    pub async fn terminate(&mut self, limit: Duration) -> ExitStatus {
        if self.try_status().is_none() {
            sigterm(self.child.as_ref().unwrap());
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
