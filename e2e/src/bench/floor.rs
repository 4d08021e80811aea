//! The floor: the same job script run on every host with plain OpenSSH, `limit` hosts at a
//! time. One `ssh` per host uploads the script over stdin and runs it in the same session
//! (`cat > F && sh F`), then checks the Cluster API sentinel: the least any SSH tool must do.

use super::procfs;
use crate::hosts::HostFarm;
use serde::Serialize;
use std::collections::HashSet;
use std::io::{Read as _, Write as _};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where the floor leaves its script and log on a host (private to the host).
pub const FLOOR_DIR: &str = "/var/lib/capssh/floor";

#[derive(Clone, Debug, Default, Serialize)]
pub struct FloorRun {
    /// From the first `ssh` started to the last one done.
    pub wall_seconds: f64,
    /// User + system CPU of every `ssh` client (from wait4's rusage).
    pub cpu_seconds: f64,
    /// CPU of the hosts' sshd (listeners and the sessions they reaped) during the run.
    pub hosts_sshd_cpu_seconds: f64,
    /// The largest sum of the running clients' VmRSS, sampled every 20 ms.
    pub peak_rss_mib: f64,
    /// Per-host time from its `ssh` start to its end.
    pub host_p50_seconds: f64,
    pub host_max_seconds: f64,
    pub failures: usize,
    /// The first failure's stderr, if any.
    pub first_error: Option<String>,
}

/// Runs `script` on the first `n` hosts of `farm`, `limit` at a time.
pub fn run(farm: &HostFarm, n: usize, script: &str, limit: usize) -> anyhow::Result<FloorRun> {
    let remote = format!(
        "umask 077; mkdir -p {FLOOR_DIR} && cat > {FLOOR_DIR}/script && sh {FLOOR_DIR}/script > {FLOOR_DIR}/log 2>&1 && test -e {}",
        capssh::bootstrap::SENTINEL
    );
    let next = AtomicUsize::new(0);
    let running: Arc<Mutex<HashSet<u32>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (running, done) = (running.clone(), done.clone());
        std::thread::spawn(move || {
            let mut peak = 0.0f64;
            while !done.load(Ordering::Relaxed) {
                let pids: Vec<u32> = running.lock().expect("running").iter().copied().collect();
                peak = peak.max(pids.into_iter().map(procfs::rss_mib).sum());
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        })
    };
    let results: Mutex<Vec<(f64, f64, Option<String>)>> = Mutex::new(Vec::with_capacity(n));
    let sshd_before = procfs::hosts_sshd_cpu(farm, n);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..limit.min(n).max(1) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let result = one(farm, i, &remote, script, &running);
                    results.lock().expect("results").push(result);
                }
            });
        }
    });
    let wall_seconds = started.elapsed().as_secs_f64();
    let hosts_sshd_cpu_seconds = procfs::hosts_sshd_cpu(farm, n) - sshd_before;
    done.store(true, Ordering::Relaxed);
    let peak_rss_mib = sampler.join().unwrap_or(0.0);
    let results = results.into_inner().expect("results");
    let mut times: Vec<f64> = results.iter().map(|r| r.0).collect();
    times.sort_by(f64::total_cmp);
    let failures: Vec<&String> = results.iter().filter_map(|r| r.2.as_ref()).collect();
    Ok(FloorRun {
        wall_seconds,
        cpu_seconds: results.iter().map(|r| r.1).sum(),
        hosts_sshd_cpu_seconds,
        peak_rss_mib,
        host_p50_seconds: super::quantile(&times, 0.5),
        host_max_seconds: times.last().copied().unwrap_or(0.0),
        failures: failures.len(),
        first_error: failures.first().map(|s| s.to_string()),
    })
}

/// One host: (seconds, CPU seconds of the client, error).
fn one(farm: &HostFarm, host: usize, remote: &str, script: &str, running: &Mutex<HashSet<u32>>) -> (f64, f64, Option<String>) {
    let started = Instant::now();
    let mut cmd = farm.ssh_command(host, "root", &farm.client_key.ed25519);
    cmd.arg(remote).stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(err) => return (started.elapsed().as_secs_f64(), 0.0, Some(format!("spawning ssh: {err}"))),
    };
    let pid = child.id();
    running.lock().expect("running").insert(pid);
    let _ = child.stdin.take().expect("stdin").write_all(script.as_bytes()); // closed when dropped
    let mut stderr = String::new();
    let _ = child.stderr.take().expect("stderr").read_to_string(&mut stderr);
    // wait4 instead of Child::wait: it also gives this child's own rusage.
    let mut status = 0;
    // SAFETY: rusage is plain old data; wait4 reaps our own child, which std then never waits for.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let reaped = unsafe { libc::wait4(pid as i32, &mut status, 0, &mut usage) };
    running.lock().expect("running").remove(&pid);
    let seconds = started.elapsed().as_secs_f64();
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let cpu = tv(usage.ru_utime) + tv(usage.ru_stime);
    let ok = reaped == pid as i32 && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    let error = (!ok).then(|| format!("{}: exit {status:#x}: {}", farm.hosts[host].name, stderr.trim()));
    (seconds, cpu, error)
}
