//! The benchmark's table and ratios (printed) and its JSON.

use super::{Config, SizeResult};
use serde::Serialize;
use std::fmt::Write as _;

#[derive(Serialize)]
pub struct Report<'a> {
    pub command: String,
    pub config: &'a Config,
    pub machine: Machine,
    /// How the manager's API requests were counted.
    pub requests_source: &'static str,
    pub results: &'a [SizeResult],
}

#[derive(Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub load_average_at_start: String,
}

impl Machine {
    pub fn now() -> Self {
        Self {
            cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            load_average_at_start: std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim().to_string(),
        }
    }
}

pub const REQUESTS_SOURCE: &str = "kube-apiserver audit log (one event per request at RequestReceived) filtered to the \
                                   manager's own client certificate user capssh-bench-manager";

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() { format!("{:.2}x", a / b) } else { "n/a".into() }
}

/// The table and the ratios, as printed.
pub fn render(config: &Config, results: &[SizeResult]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "concurrency {} (capssh --max-concurrent-hosts, and parallel ssh for the floor); floor = median of {} runs; times in s;\n\
         capssh = from the first Machine created to all provisioned; create = the harness creating N Secrets, Machines and SSHMachines;\n\
         machine = one SSHMachine's creation to provisioned",
        config.concurrency, config.floor_runs
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| N | floor | capssh | capssh/floor | create | machine p50/max | peer | hosts→Available | delete→Available | mgr RSS MiB idle/peak | mgr CPU s prov/del | floor CPU s | floor RSS MiB | req/machine prov/del | SSHMachine reconcile p50/p90/p99 ms | outside SSH p50/p90/p99 ms | reconciles/machine |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in results {
        let f = &r.floor;
        match &r.capssh {
            Some(c) => {
                let n = r.n as f64;
                let lat = c.reconcile_provision.get("SSHMachine").cloned().unwrap_or_default();
                let _ = writeln!(
                    out,
                    "| {} | {:.2} | {:.2} | {} | {:.2} | {:.2}/{:.2} | {} | {:.2} | {:.2} | {:.1}/{:.1} | {:.2}/{:.2} | {:.2} | {:.1} | {:.1}/{:.1} | {:.0}/{:.0}/{:.0} | {:.1}/{:.1}/{:.1} | {:.1} |",
                    r.n,
                    f.wall_seconds,
                    c.provision.wall_seconds,
                    ratio(c.provision.wall_seconds, f.wall_seconds),
                    c.create_seconds,
                    c.machine_p50_seconds,
                    c.machine_max_seconds,
                    if r.peer.ran { "ran" } else { "not run" },
                    c.hosts_ready.wall_seconds,
                    c.delete.wall_seconds,
                    c.manager_idle.rss_mib,
                    c.manager_end.peak_rss_mib,
                    c.provision.cpu_seconds,
                    c.delete.cpu_seconds,
                    f.cpu_seconds,
                    f.peak_rss_mib,
                    c.provision.requests.total as f64 / n,
                    c.delete.requests.total as f64 / n,
                    lat.p50_ms,
                    lat.p90_ms,
                    lat.p99_ms,
                    lat.outside_ssh_p50_ms,
                    lat.outside_ssh_p90_ms,
                    lat.outside_ssh_p99_ms,
                    lat.reconciles / n,
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "| {} | {:.2} | failed | | | | | | | | | {:.2} | {:.1} | | | | |",
                    r.n, f.wall_seconds, f.cpu_seconds, f.peak_rss_mib
                );
            }
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "CPU seconds while provisioning, by who spends them (hosts = every process in the hosts' network namespaces: sshd, sessions, the job):"
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "| N | floor: ssh clients | floor: hosts | capssh: manager | kube-apiserver | etcd | hosts |");
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for r in results {
        if let Some(c) = &r.capssh {
            let p = &c.provision;
            let _ = writeln!(
                out,
                "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
                r.n,
                r.floor.cpu_seconds,
                r.floor.hosts_sshd_cpu_seconds,
                p.cpu_seconds,
                p.apiserver_cpu_seconds,
                p.etcd_cpu_seconds,
                p.hosts_sshd_cpu_seconds
            );
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "ratios (capssh / floor: provisioning wall time, CPU seconds, peak memory):");
    for r in results {
        if let Some(c) = &r.capssh {
            let _ = writeln!(
                out,
                "  N={}: wall {}, CPU {}, memory {} (manager peak RSS vs the concurrent ssh clients' peak)",
                r.n,
                ratio(c.provision.wall_seconds, r.floor.wall_seconds),
                ratio(c.provision.cpu_seconds, r.floor.cpu_seconds),
                ratio(c.manager_end.peak_rss_mib, r.floor.peak_rss_mib)
            );
        }
        if let Some(err) = &r.capssh_error {
            let _ = writeln!(out, "  N={}: capssh failed: {err}", r.n);
        }
    }
    if let Some(r) = results.first() {
        let _ = writeln!(out, "capssh / peer: n/a: {}", r.peer.reason);
    }
    let done: Vec<&SizeResult> = results.iter().filter(|r| r.capssh.is_some()).collect();
    if let (Some(a), Some(b)) = (done.first(), done.last())
        && a.n != b.n
    {
        let (ca, cb) = (a.capssh.as_ref().expect("done"), b.capssh.as_ref().expect("done"));
        let _ = writeln!(out, "growth N={} → N={} ({}):", a.n, b.n, ratio(b.n as f64, a.n as f64));
        let _ = writeln!(
            out,
            "  floor wall {}, capssh wall {}",
            ratio(b.floor.wall_seconds, a.floor.wall_seconds),
            ratio(cb.provision.wall_seconds, ca.provision.wall_seconds)
        );
        let _ = writeln!(
            out,
            "  floor CPU {}, capssh CPU {}",
            ratio(b.floor.cpu_seconds, a.floor.cpu_seconds),
            ratio(cb.provision.cpu_seconds, ca.provision.cpu_seconds)
        );
        let _ = writeln!(
            out,
            "  floor memory {}, capssh peak RSS {}",
            ratio(b.floor.peak_rss_mib, a.floor.peak_rss_mib),
            ratio(cb.manager_end.peak_rss_mib, ca.manager_end.peak_rss_mib)
        );
        let per = |c: &super::capssh_run::CapsshRun, n: usize| c.provision.requests.total as f64 / n as f64;
        let _ = writeln!(out, "  requests per machine (provision) {:.1} → {:.1}", per(ca, a.n), per(cb, b.n));
    }
    if let Some(r) = done.last() {
        let c = r.capssh.as_ref().expect("done");
        let _ = writeln!(out, "targets at N={} (reported, not asserted):", r.n);
        let wall = c.provision.wall_seconds / r.floor.wall_seconds;
        let _ = writeln!(out, "  wall within 1.2x of the floor: {} ({wall:.2}x)", if wall <= 1.2 { "met" } else { "MISSED" });
        let rss = c.manager_end.peak_rss_mib;
        let _ = writeln!(out, "  manager RSS under 40 MiB: {} ({rss:.1} MiB)", if rss <= 40.0 { "met" } else { "MISSED" });
        let per_machine = c.provision.requests.total as f64 / r.n as f64;
        let _ = writeln!(out, "  API requests per machine at most 15: {} ({per_machine:.1})", if per_machine <= 15.0 { "met" } else { "MISSED" });
        let outside = c.reconcile_provision.get("SSHMachine").map(|l| l.outside_ssh_p99_ms).unwrap_or_default();
        let _ = writeln!(
            out,
            "  SSHMachine reconcile p99 outside SSH at most 50 ms: {} ({outside:.1} ms)",
            if outside <= 50.0 { "met" } else { "MISSED" }
        );
        let _ = writeln!(out, "  ahead of the peer: not measured (peer not run)");
    }
    if let Some(c) = done.last().and_then(|r| r.capssh.as_ref()) {
        let _ = writeln!(
            out,
            "manager API requests during provisioning at N={}, by verb and resource ({REQUESTS_SOURCE}):",
            done.last().expect("done").n
        );
        let mut kinds: Vec<(&String, &u64)> = c.provision.requests.by_kind.iter().collect();
        kinds.sort_by(|a, b| b.1.cmp(a.1));
        for (kind, count) in kinds.iter().take(12) {
            let _ = writeln!(out, "  {count:>6}  {kind}");
        }
    }
    out
}
