//! `capssh manager` as a local process against a harness management plane.

use crate::mgmt::ManagementPlane;
use crate::process::Daemon;
use crate::tools::{capssh, free_port};
use std::process::Command;

/// Starts the manager with controllers only (no webhook), logging JSON to `<plane>/<name>.log`.
pub fn start_manager(plane: &ManagementPlane, name: &str, extra_args: &[&str]) -> anyhow::Result<Daemon> {
    start_manager_with_metrics(plane, name, extra_args).map(|(daemon, _)| daemon)
}

/// Like [`start_manager`], also returning the port of its /metrics endpoint.
pub fn start_manager_with_metrics(plane: &ManagementPlane, name: &str, extra_args: &[&str]) -> anyhow::Result<(Daemon, u16)> {
    let metrics_port = free_port();
    let mut cmd = Command::new(capssh());
    cmd.args(["manager", "--webhook-addr", ""])
        .args(["--health-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
        .args(extra_args)
        .env("KUBECONFIG", &plane.kubeconfig)
        .env("RUST_LOG", "info,capssh=debug");
    Ok((Daemon::start(name, cmd, &plane.dir.join(format!("{name}.log")))?, metrics_port))
}

/// GET http://127.0.0.1:<port><path>, body as text (a bare HTTP/1.0 request: no client needed).
pub fn http_get(port: u16, path: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default())
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
