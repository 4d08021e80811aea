//! capssh with some hosts unplugged after the pool saw them Available: the last k of N hosts
//! drop every packet (`HostFarm::set_link(i, false)`), so a connection to one hangs until its
//! timeout, and N-k machines are provisioned on the same farm. How much slower than the clean
//! run is what a dead rack costs until the manager stops picking its hosts.

use super::SizeResult;
use super::capssh_run::{Phase, Stand, machine_names};
use super::observe::Latency;
use super::procfs::ProcSample;
use super::report::ratio;
use crate::hosts::HostFarm;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::Duration;

#[derive(Clone, Debug, Default, Serialize)]
pub struct BlackholedRun {
    /// k: the last k hosts, unplugged once every host was Available.
    pub blackholed: usize,
    /// N - k: the machines created.
    pub machines: usize,
    pub hosts_ready: Phase,
    /// Machines created → all N - k provisioned.
    pub provision: Phase,
    pub create_seconds: f64,
    pub machine_p50_seconds: f64,
    pub machine_p90_seconds: f64,
    pub machine_max_seconds: f64,
    pub reconcile_provision: HashMap<String, Latency>,
    /// The manager once every machine was provisioned (its VmHWM is the peak of the run so far).
    pub manager_after_provision: ProcSample,
    /// Links restored, machines deleted → every one of the N hosts Available again; None when
    /// that failed (`delete_error`): the provisioning numbers stand either way.
    pub delete: Option<Phase>,
    pub delete_waits: BTreeMap<String, usize>,
    pub delete_error: Option<String>,
    pub manager_end: ProcSample,
    pub logs: String,
}

/// k = N·P/100, rounded down, leaving at least one machine.
pub fn blackholed_count(n: usize, percent: usize) -> usize {
    (n * percent.min(100) / 100).min(n.saturating_sub(1))
}

/// Hosts unplugged until [`restore`](Self::restore), or until dropped (on any error).
struct Unplugged<'a> {
    farm: &'a HostFarm,
    hosts: Vec<usize>,
}

impl<'a> Unplugged<'a> {
    fn new(farm: &'a HostFarm, hosts: impl IntoIterator<Item = usize>) -> anyhow::Result<Self> {
        let mut unplugged = Unplugged { farm, hosts: Vec::new() };
        for i in hosts {
            // Recorded first: a half-done `ip link set down` is put back too.
            unplugged.hosts.push(i);
            farm.set_link(i, false)?;
        }
        Ok(unplugged)
    }

    fn restore(&mut self) -> anyhow::Result<()> {
        let mut first_error = None;
        for i in std::mem::take(&mut self.hosts) {
            if let Err(err) = self.farm.set_link(i, true) {
                first_error.get_or_insert(err.context(format!("plugging host {i} back")));
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for Unplugged<'_> {
    fn drop(&mut self) {
        if let Err(err) = self.restore() {
            eprintln!("bench: {err:#}");
        }
    }
}

/// Runs capssh on the first `n` hosts of `farm` with the last `k` unplugged after registration.
pub async fn run(farm: &HostFarm, n: usize, k: usize, data: &str, limit: usize, timeout: Duration) -> anyhow::Result<BlackholedRun> {
    anyhow::ensure!(k > 0 && k < n, "cannot unplug {k} of {n} hosts");
    let stand = Stand::start(&format!("bench-capssh-blackholed-{n}"), farm, n, limit, timeout).await?;
    let mut run = BlackholedRun { blackholed: k, machines: n - k, logs: stand.logs(), ..Default::default() };
    run.hosts_ready = stand.register_hosts().await?;
    let mut unplugged = Unplugged::new(farm, n - k..n)?;
    let names = machine_names(n - k);
    let p = stand.provision(&names, data).await?;
    (run.provision, run.create_seconds, run.reconcile_provision) = (p.phase, p.create_seconds, p.reconcile);
    (run.machine_p50_seconds, run.machine_p90_seconds, run.machine_max_seconds) = p.machine_seconds;
    run.manager_after_provision = stand.manager();
    unplugged.restore()?;
    match stand.delete(&names).await {
        Ok((phase, waits, _)) => (run.delete, run.delete_waits) = (Some(phase), waits),
        Err(err) => run.delete_error = Some(format!("{err:#}")),
    }
    run.manager_end = stand.manager();
    Ok(run)
}

/// The table of the blackholed runs, next to the clean run of the same size.
pub fn render(out: &mut String, results: &[SizeResult]) {
    if results.iter().all(|r| r.capssh_blackholed.is_none() && r.capssh_blackholed_error.is_none()) {
        return;
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "capssh with hosts blackholed (the last k hosts drop every packet once all N are Available; N-k machines; times in s; \
         clean = the clean run's N machines; peak RSS = manager VmHWM once provisioned; delete = links restored, machines deleted \
         to all N hosts Available):"
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| N | hosts blackholed | machines | provisioned | clean | blackholed/clean | machine p50/max | peak RSS MiB | mgr CPU s | req/machine | delete→Available |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|");
    for r in results {
        let clean = r.capssh.as_ref().map(|c| c.provision.wall_seconds);
        let clean_text = clean.map(|c| format!("{c:.2}")).unwrap_or_else(|| "failed".into());
        match (&r.capssh_blackholed, &r.capssh_blackholed_error) {
            (Some(b), _) => {
                let delete = b.delete.as_ref().map(|d| format!("{:.2}", d.wall_seconds)).unwrap_or_else(|| "failed".into());
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {:.2} | {clean_text} | {} | {:.2}/{:.2} | {:.1} | {:.2} | {:.1} | {delete} |",
                    r.n,
                    b.blackholed,
                    b.machines,
                    b.provision.wall_seconds,
                    clean.map(|c| ratio(b.provision.wall_seconds, c)).unwrap_or_else(|| "n/a".into()),
                    b.machine_p50_seconds,
                    b.machine_max_seconds,
                    b.manager_after_provision.peak_rss_mib,
                    b.provision.cpu_seconds,
                    b.provision.requests.total as f64 / b.machines.max(1) as f64,
                );
            }
            (None, Some(_)) => {
                let k = r.blackholed_hosts;
                let _ = writeln!(out, "| {} | {k} | {} | failed | {clean_text} | n/a | | | | | |", r.n, r.n - k.min(r.n));
            }
            (None, None) => {}
        }
    }
    for r in results {
        if let Some(err) = &r.capssh_blackholed_error {
            let _ = writeln!(out, "  N={}: blackholed run: {err}", r.n);
        }
        if let Some(err) = r.capssh_blackholed.as_ref().and_then(|b| b.delete_error.as_ref()) {
            let _ = writeln!(out, "  N={}: blackholed run, delete: {err}", r.n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::blackholed_count;

    #[test]
    fn a_fifth_of_the_hosts_rounded_down_and_never_all() {
        assert_eq!(blackholed_count(1000, 20), 200);
        assert_eq!(blackholed_count(10, 20), 2);
        assert_eq!(blackholed_count(3, 20), 0);
        assert_eq!(blackholed_count(50, 0), 0);
        assert_eq!(blackholed_count(10, 100), 9);
        assert_eq!(blackholed_count(1, 50), 0);
    }
}
