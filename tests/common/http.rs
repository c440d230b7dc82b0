//! Asking a bridge's ops server (`/healthz`, `/readyz`, `/metrics`) as a probe or a scraper
//! would: each request given up after 2 s, so a stalled server fails a wait, never hangs it.

use std::time::{Duration, Instant};

/// The status and body `url` answers; `None` when it does not answer.
pub async fn http_get(url: &str) -> Option<(u16, String)> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().ok()?;
    let resp = client.get(url).send().await.ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.text().await.ok()?))
}

/// The status `url` answers; `None` when it does not answer.
pub async fn http_status(url: &str) -> Option<u16> {
    http_get(url).await.map(|(status, _)| status)
}

/// Waits until `url` answers `status`; panics after `within`.
pub async fn wait_status(url: &str, status: u16, within: Duration) {
    let deadline = Instant::now() + within;
    while http_status(url).await != Some(status) {
        assert!(Instant::now() < deadline, "{url} never answered {status} within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
