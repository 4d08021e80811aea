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

#[derive(Clone, Serialize)]
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
                                   manager's own client certificate user capssh-bench-manager; for BYOH, to its manager \
                                   (byoh-bench-manager), the manager's workload-cluster client (byoh-bench-workload) and \
                                   the agents (group byoh:hosts), counted apart";

pub(super) fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() { format!("{:.2}x", a / b) } else { "n/a".into() }
}

/// The table and the ratios, as printed.
pub fn render(config: &Config, results: &[SizeResult]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "concurrency {} (capssh --max-concurrent-hosts, and parallel ssh for the floor); floor = median of {} runs; times in s;\n\
         capssh = from the first Machine created to all provisioned; create = the harness creating N Secrets, Machines and SSHMachines;\n\
         machine = one SSHMachine's creation to provisioned; BYOH = the same N Machines on the same hosts, from the first created to all\n\
         provisioned (ByoMachine ready and its host's bootstrap succeeded): details in the BYOH table below",
        config.concurrency, config.floor_runs
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| N | floor | capssh | capssh/floor | BYOH | capssh/BYOH | create | machine p50/max | hosts→Available | delete→Available | mgr RSS MiB idle/peak | mgr CPU s prov/del | floor CPU s | floor RSS MiB | req/machine prov/del | SSHMachine reconcile p50/p90/p99 ms | outside SSH p50/p90/p99 ms | reconciles/machine |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in results {
        let f = &r.floor;
        let byoh_wall = r.byoh.as_ref().map(|b| b.provision.wall_seconds);
        let byoh = byoh_wall.map(|w| format!("{w:.2}")).unwrap_or_else(|| if r.byoh_error.is_some() { "no run".into() } else { String::new() });
        match &r.capssh {
            Some(c) => {
                let n = r.n as f64;
                let lat = c.reconcile_provision.get("SSHMachine").cloned().unwrap_or_default();
                let _ = writeln!(
                    out,
                    "| {} | {:.2} | {:.2} | {} | {} | {} | {:.2} | {:.2}/{:.2} | {:.2} | {:.2} | {:.1}/{:.1} | {:.2}/{:.2} | {:.2} | {:.1} | {:.1}/{:.1} | {:.0}/{:.0}/{:.0} | {:.1}/{:.1}/{:.1} | {:.1} |",
                    r.n,
                    f.wall_seconds,
                    c.provision.wall_seconds,
                    ratio(c.provision.wall_seconds, f.wall_seconds),
                    byoh,
                    byoh_wall.map(|w| ratio(c.provision.wall_seconds, w)).unwrap_or_else(|| "n/a".into()),
                    c.create_seconds,
                    c.machine_p50_seconds,
                    c.machine_max_seconds,
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
                    "| {} | {:.2} | failed | | {byoh} | | | | | | | | {:.2} | {:.1} | | | | |",
                    r.n, f.wall_seconds, f.cpu_seconds, f.peak_rss_mib
                );
            }
        }
    }
    let _ = writeln!(out);
    for r in results {
        let _ = writeln!(out, "N={}: {}", r.n, host_cost(r.n, r.farm_start_seconds, &r.hosts_idle));
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
        if let Some(err) = r.capssh.as_ref().and_then(|c| c.delete_error.as_ref()) {
            let _ = writeln!(out, "  N={}: capssh's delete failed (its columns are empty): {err}", r.n);
        }
    }
    let _ = writeln!(
        out,
        "ratios capssh / BYOH while provisioning (wall; CPU: capssh's manager vs BYOH's manager and agents; CPU with the hosts: each \
         manager plus every process on the hosts; memory: capssh's manager peak vs BYOH's manager peak plus its agents' summed RSS, \
         and plus their private RSS only; API requests, every identity):"
    );
    for r in results {
        match (&r.capssh, &r.byoh) {
            (Some(c), Some(b)) => {
                let (cp, bp) = (&c.provision, &b.provision);
                let byoh_requests = bp.requests.manager.total + bp.requests.workload.total + bp.requests.agents.total;
                let _ = writeln!(
                    out,
                    "  N={}: wall {}, CPU {}, CPU with the hosts {}, memory {} (private {}), requests {}",
                    r.n,
                    ratio(cp.wall_seconds, bp.wall_seconds),
                    ratio(cp.cpu_seconds, bp.manager_cpu_seconds + bp.agents_cpu_seconds),
                    ratio(cp.cpu_seconds + cp.hosts_sshd_cpu_seconds, bp.manager_cpu_seconds + bp.hosts_cpu_seconds),
                    ratio(c.manager_end.peak_rss_mib, b.manager_end.peak_rss_mib + b.agents_after_provision.rss_mib_total),
                    ratio(c.manager_end.peak_rss_mib, b.manager_end.peak_rss_mib + b.agents_after_provision.rss_anon_mib_total),
                    ratio(cp.requests.total as f64, byoh_requests as f64)
                );
            }
            _ => {
                let why = r.byoh_error.as_deref().unwrap_or("capssh has no numbers");
                let _ = writeln!(out, "  N={}: n/a: BYOH {why}", r.n);
            }
        }
    }
    if let Some(r) = results.first() {
        let _ = writeln!(out, "k0smotron (the first choice of peer): not run: {}", r.peer.reason);
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
    let steady = super::targets::steady(results);
    if !steady.is_empty() {
        let _ = writeln!(out, "steady state after provisioning (health checks only; --steady-seconds):");
        for line in steady {
            let _ = writeln!(out, "  {line}");
        }
    }
    let _ = writeln!(out, "targets (reported, not asserted):");
    for line in super::targets::judge(results) {
        let _ = writeln!(out, "  {line}");
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
    super::blackhole::render(&mut out, results);
    render_byoh(&mut out, results);
    out
}

/// What one test host costs: the farm's start time and its idle processes' memory, per host.
pub fn host_cost(n: usize, start_seconds: f64, idle: &super::procfs::HostsMemory) -> String {
    let per = |total: f64| if n > 0 { total / n as f64 } else { 0.0 };
    format!(
        "hosts: {n} started in {start_seconds:.2} s ({:.0} ms per host), idle sshd RSS {:.2} MiB / PSS {:.2} MiB per host ({} processes: sshd and the namespaces' anchor)",
        per(start_seconds) * 1000.0,
        per(idle.rss_mib_total),
        per(idle.pss_mib_total),
        idle.processes
    )
}

/// BYOH's own table: its phases, its manager and its agents (which stay on the hosts: capssh
/// leaves nothing running there), and whether its hosts and machines paired one to one.
fn render_byoh(out: &mut String, results: &[SizeResult]) {
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "BYOH {} (times in s; registered = agents started to every ByoHost registered; delete = ByoMachines, then Machines, deleted to \
         every host free; agents = one per host, summed; req = API requests per machine by identity):",
        super::byoh::VERSION
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| N | provision | registered | delete→free | machine p50/max | mgr RSS MiB idle/peak | agents RSS MiB sum (mean/max) | agents private MiB | agents peak MiB sum | mgr CPU s prov/del | agents CPU s reg/prov/del | mgr req prov/del | workload req prov | agent req reg/prov/del | byomachine reconcile p50/p90/p99 ms | reconciles/machine | pairing violations |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in results {
        let Some(b) = &r.byoh else {
            let _ = writeln!(out, "| {} | no run | | | | | | | | | | | | | | | |", r.n);
            continue;
        };
        let n = r.n as f64;
        let per = |count: u64| count as f64 / n;
        let lat = b.reconcile_provision.get("byomachine").cloned().unwrap_or_default();
        let a = &b.agents_after_provision;
        let (reg, prov, del) = (&b.registered, &b.provision, &b.delete);
        let _ = writeln!(
            out,
            "| {} | {:.2} | {:.2} | {:.2} | {:.2}/{:.2} | {:.1}/{:.1} | {:.0} ({:.1}/{:.1}) | {:.0} | {:.0} | {:.2}/{:.2} | {:.2}/{:.2}/{:.2} | {:.1}/{:.1} | {:.1} | {:.1}/{:.1}/{:.1} | {:.0}/{:.0}/{:.0} | {:.1} | {} |",
            r.n,
            prov.wall_seconds,
            reg.wall_seconds,
            del.wall_seconds,
            b.machine_p50_seconds,
            b.machine_max_seconds,
            b.manager_idle.rss_mib,
            b.manager_end.peak_rss_mib,
            a.rss_mib_total,
            a.rss_mib_mean,
            a.rss_mib_max,
            a.rss_anon_mib_total,
            b.agents_end.peak_rss_mib_total,
            prov.manager_cpu_seconds,
            del.manager_cpu_seconds,
            reg.agents_cpu_seconds,
            prov.agents_cpu_seconds,
            del.agents_cpu_seconds,
            per(prov.requests.manager.total),
            per(del.requests.manager.total),
            per(prov.requests.workload.total),
            per(reg.requests.agents.total),
            per(prov.requests.agents.total),
            per(del.requests.agents.total),
            lat.p50_ms,
            lat.p90_ms,
            lat.p99_ms,
            lat.reconciles / n,
            b.pairing.violations(),
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "BYOH CPU seconds while provisioning, by who spends them (hosts = every process in the hosts' network namespaces):");
    let _ = writeln!(out);
    let _ = writeln!(out, "| N | BYOH: manager | agents (and the commands they ran) | hosts | kube-apiserver | etcd |");
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    for r in results {
        if let Some(b) = &r.byoh {
            let p = &b.provision;
            let _ = writeln!(
                out,
                "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
                r.n, p.manager_cpu_seconds, p.agents_cpu_seconds, p.hosts_cpu_seconds, p.apiserver_cpu_seconds, p.etcd_cpu_seconds
            );
        }
    }
    let _ = writeln!(out);
    for r in results {
        if let Some(b) = &r.byoh {
            let idle = &b.agents_idle;
            let _ = writeln!(
                out,
                "BYOH N={}: idle agents (registered, no work) {:.0} MiB RSS summed ({:.0} MiB private), {} running at the end; after release \
                 {} hosts keep the sentinel, {} keep the bootstrap's files (no reset runs under --skip-installation)",
                r.n,
                idle.rss_mib_total,
                idle.rss_anon_mib_total,
                b.agents_end.running,
                b.hosts_with_sentinel_after_release,
                b.hosts_with_bootstrap_files_after_release
            );
            let p = &b.pairing;
            if p.violations() > 0 {
                let _ = writeln!(
                    out,
                    "  pairing violations: handovers {:?}; machines without host {:?}; machines with several hosts {:?}; label mismatches {:?}",
                    p.handovers, p.machines_without_host, p.machines_with_several_hosts, p.label_mismatches
                );
            }
        } else if let Some(err) = &r.byoh_error {
            let _ = writeln!(out, "BYOH N={}: {err}", r.n);
        }
    }
    if let Some(r) = results.iter().rev().find(|r| r.byoh.is_some()) {
        let b = r.byoh.as_ref().expect("found");
        let _ = writeln!(out, "BYOH API requests during provisioning at N={}, by identity, verb and resource:", r.n);
        for (who, requests) in
            [("manager", &b.provision.requests.manager), ("workload", &b.provision.requests.workload), ("agents", &b.provision.requests.agents)]
        {
            let mut kinds: Vec<(&String, &u64)> = requests.by_kind.iter().collect();
            kinds.sort_by(|a, b| b.1.cmp(a.1));
            for (kind, count) in kinds.iter().take(8) {
                let _ = writeln!(out, "  {who:>8} {count:>6}  {kind}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::byoh::ByohRun;
    use super::super::capssh_run::CapsshRun;
    use super::super::floor::FloorRun;
    use super::super::peer::PeerStatus;
    use super::super::{Config, SizeResult};

    fn size(n: usize, byoh: Option<ByohRun>, byoh_error: Option<&str>) -> SizeResult {
        let floor = FloorRun {
            wall_seconds: 2.0,
            cpu_seconds: 1.0,
            hosts_sshd_cpu_seconds: 1.0,
            peak_rss_mib: 10.0,
            host_p50_seconds: 1.5,
            host_max_seconds: 2.0,
            failures: 0,
            first_error: None,
        };
        let mut capssh = CapsshRun::default();
        capssh.provision.wall_seconds = 3.0;
        SizeResult {
            n,
            farm_start_seconds: 1.0,
            hosts_idle: Default::default(),
            floor: floor.clone(),
            floor_runs: vec![floor],
            capssh: Some(capssh),
            capssh_error: None,
            blackholed_hosts: 0,
            capssh_blackholed: None,
            capssh_blackholed_error: None,
            peer: PeerStatus { ran: false, reason: "the proxy refuses it".into() },
            byoh,
            byoh_error: byoh_error.map(String::from),
        }
    }

    #[test]
    fn the_peer_has_its_columns_and_ratio() {
        let mut byoh = ByohRun::default();
        byoh.provision.wall_seconds = 6.0;
        byoh.pairing.handovers.push("h0: m0000 -> m0001".into());
        let table = super::render(&Config::default(), &[size(50, Some(byoh), None), size(100, None, Some("not built: missing"))]);
        assert!(table.contains("| 50 | 2.00 | 3.00 | 1.50x | 6.00 | 0.50x |"), "{table}");
        assert!(table.contains("| 100 | 2.00 | 3.00 | 1.50x | no run | n/a |"), "{table}");
        assert!(table.contains("N=100: ahead of the peer: not measured (BYOH did not run)"), "{table}");
        assert!(table.contains("pairing violations: handovers [\"h0: m0000 -> m0001\"]"), "{table}");
        assert!(table.contains("BYOH N=100: not built: missing"), "{table}");
        assert!(table.contains("k0smotron (the first choice of peer): not run: the proxy refuses it"), "{table}");
    }

    #[test]
    fn the_cost_of_one_host() {
        let idle = super::super::procfs::HostsMemory { processes: 2000, rss_mib_total: 9000.0, pss_mib_total: 2500.0 };
        assert_eq!(
            super::host_cost(1000, 40.0, &idle),
            "hosts: 1000 started in 40.00 s (40 ms per host), idle sshd RSS 9.00 MiB / PSS 2.50 MiB per host (2000 processes: sshd and the namespaces' anchor)"
        );
    }

    #[test]
    fn the_blackholed_run_next_to_the_clean_one() {
        use super::super::blackhole::BlackholedRun;
        let mut b = BlackholedRun { blackholed: 2, machines: 8, ..Default::default() };
        b.provision.wall_seconds = 6.0;
        b.provision.requests.total = 100;
        (b.machine_p50_seconds, b.machine_max_seconds, b.manager_after_provision.peak_rss_mib) = (2.0, 5.5, 30.0);
        let mut ok = size(10, None, Some("skipped (--no-byoh)"));
        (ok.blackholed_hosts, ok.capssh_blackholed) = (2, Some(b));
        let mut failed = size(20, None, Some("skipped (--no-byoh)"));
        (failed.blackholed_hosts, failed.capssh_blackholed_error) = (4, Some("timed out after 600s waiting for every machine provisioned".into()));
        let table = super::render(&Config::default(), &[ok, failed]);
        assert!(table.contains("| 10 | 2 | 8 | 6.00 | 3.00 | 2.00x | 2.00/5.50 | 30.0 | 0.00 | 12.5 | failed |"), "{table}");
        assert!(table.contains("| 20 | 4 | 16 | failed | 3.00 | n/a |"), "{table}");
        assert!(table.contains("N=20: blackholed run: timed out after 600s"), "{table}");
        // Off: no table at all.
        assert!(!super::render(&Config::default(), &[size(10, None, None)]).contains("blackholed"));
    }
}
