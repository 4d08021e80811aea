//! `capssh manager` as a local process against a harness management plane.

use crate::mgmt::ManagementPlane;
use crate::process::Daemon;
use crate::tools::{capssh, free_port};
use std::process::Command;

/// Starts the manager with controllers only (no webhook), logging JSON to `<plane>/<name>.log`.
pub fn start_manager(plane: &ManagementPlane, name: &str, extra_args: &[&str]) -> anyhow::Result<Daemon> {
    let mut cmd = Command::new(capssh());
    cmd.args(["manager", "--webhook-addr", ""])
        .args(["--health-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--metrics-addr", &format!("127.0.0.1:{}", free_port())])
        .args(extra_args)
        .env("KUBECONFIG", &plane.kubeconfig)
        .env("RUST_LOG", "info,capssh=debug");
    Daemon::start(name, cmd, &plane.dir.join(format!("{name}.log")))
}

/// Polls `check` every 250 ms until it returns Some, or fails after `seconds`.
pub async fn eventually<T, F, Fut>(seconds: u64, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "timed out after {seconds}s waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}
