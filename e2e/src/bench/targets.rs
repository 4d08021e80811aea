//! The footprint and speed targets, judged from a run's results (reported, never asserted: the
//! machine is shared and noisy).

use super::SizeResult;

/// Wall time at most this times the floor's, at N=200 and N=1,000.
const WALL_VS_FLOOR: f64 = 1.1;
/// The manager's peak RSS: at most 40 MiB at N=200, 96 MiB at N=1,000.
const PEAK_RSS_MIB: [(usize, f64); 2] = [(200, 40.0), (1000, 96.0)];
const REQUESTS_PER_MACHINE: f64 = 15.0;
const RECONCILE_P99_OUTSIDE_SSH_MS: f64 = 50.0;
/// Provisioning with a fifth of the hosts blackholed, against the clean run.
const BLACKHOLED_VS_CLEAN: f64 = 1.2;

/// One line per target and size it applies to: "met" or "MISSED", with the figure.
pub fn judge(results: &[SizeResult]) -> Vec<String> {
    let mut lines = Vec::new();
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    for r in results {
        let n = r.n;
        let Some(c) = r.capssh.as_ref() else { continue };
        if n == 200 || n == 1000 {
            let wall = c.provision.wall_seconds / r.floor.wall_seconds;
            lines.push(format!("N={n}: wall within {WALL_VS_FLOOR}x of the floor: {} ({wall:.2}x)", verdict(wall <= WALL_VS_FLOOR)));
        }
        if let Some((_, limit)) = PEAK_RSS_MIB.iter().find(|(size, _)| *size == n) {
            let rss = c.manager_end.peak_rss_mib;
            lines.push(format!("N={n}: manager peak RSS at most {limit} MiB: {} ({rss:.1} MiB)", verdict(rss <= *limit)));
        }
        let per_machine = c.provision.requests.total as f64 / n as f64;
        lines.push(format!(
            "N={n}: API requests per machine at most {REQUESTS_PER_MACHINE}: {} ({per_machine:.1})",
            verdict(per_machine <= REQUESTS_PER_MACHINE)
        ));
        let p99 = |l: &std::collections::HashMap<String, super::observe::Latency>| l.get("SSHMachine").map(|l| l.outside_ssh_p99_ms);
        if let Some(burst) = p99(&c.reconcile_provision) {
            lines.push(format!(
                "N={n}: SSHMachine reconcile p99 outside SSH at most {RECONCILE_P99_OUTSIDE_SSH_MS} ms, while provisioning: {} ({burst:.1} ms)",
                verdict(burst <= RECONCILE_P99_OUTSIDE_SSH_MS)
            ));
        }
        if let Some(steady) = p99(&c.reconcile_steady) {
            lines.push(format!(
                "N={n}: SSHMachine reconcile p99 outside SSH at most {RECONCILE_P99_OUTSIDE_SSH_MS} ms, in steady state ({:.0} s): {} ({steady:.1} ms)",
                c.steady_seconds,
                verdict(steady <= RECONCILE_P99_OUTSIDE_SSH_MS)
            ));
        }
        if let Some(b) = r.capssh_blackholed.as_ref() {
            let ratio = b.provision.wall_seconds / c.provision.wall_seconds;
            lines.push(format!(
                "N={n}: with {} of the hosts blackholed, provisioning the rest within {BLACKHOLED_VS_CLEAN}x of the clean run: {} ({ratio:.2}x)",
                b.blackholed,
                verdict(ratio <= BLACKHOLED_VS_CLEAN)
            ));
        }
        match &r.byoh {
            Some(b) => {
                let (ours, theirs) = (c.provision.wall_seconds, b.provision.wall_seconds);
                lines.push(format!("N={n}: ahead of the peer (BYOH) in wall time: {} ({ours:.2}s vs {theirs:.2}s)", verdict(ours < theirs)));
            }
            None => lines.push(format!("N={n}: ahead of the peer: not measured (BYOH did not run)")),
        }
    }
    lines
}

/// The steady-state reconciles (`--steady-seconds`), one line per size and kind that has them.
pub fn steady(results: &[SizeResult]) -> Vec<String> {
    let mut lines = Vec::new();
    for r in results {
        let Some(c) = r.capssh.as_ref().filter(|c| c.steady_seconds > 0.0) else { continue };
        for kind in ["SSHMachine", "SSHHost"] {
            if let Some(l) = c.reconcile_steady.get(kind) {
                lines.push(format!(
                    "N={}: {kind}: {:.0} reconciles in {:.0} s; p50/p90/p99 {:.1}/{:.1}/{:.1} ms, outside SSH {:.1}/{:.1}/{:.1} ms",
                    r.n,
                    l.reconciles,
                    c.steady_seconds,
                    l.p50_ms,
                    l.p90_ms,
                    l.p99_ms,
                    l.outside_ssh_p50_ms,
                    l.outside_ssh_p90_ms,
                    l.outside_ssh_p99_ms
                ));
            }
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::capssh_run::CapsshRun;

    fn size(n: usize, floor: f64, capssh: f64, rss: f64, requests: u64) -> SizeResult {
        let mut run = CapsshRun::default();
        run.provision.wall_seconds = capssh;
        run.provision.requests.total = requests;
        run.manager_end.peak_rss_mib = rss;
        let mut result = SizeResult { n, ..Default::default() };
        result.floor.wall_seconds = floor;
        result.capssh = Some(run);
        result
    }

    #[test]
    fn each_target_is_judged_at_the_sizes_it_names() {
        let lines = judge(&[size(50, 10.0, 30.0, 90.0, 500), size(200, 20.0, 21.0, 41.0, 3000), size(1000, 100.0, 120.0, 90.0, 16000)]);
        let has = |s: &str| lines.iter().any(|l| l.contains(s));
        assert!(!lines.iter().any(|l| l.starts_with("N=50: wall")), "no wall target at N=50: {lines:?}");
        assert!(!lines.iter().any(|l| l.starts_with("N=50: manager peak RSS")), "{lines:?}");
        assert!(has("N=200: wall within 1.1x of the floor: met (1.05x)"), "{lines:?}");
        assert!(has("N=1000: wall within 1.1x of the floor: MISSED (1.20x)"), "{lines:?}");
        assert!(has("N=200: manager peak RSS at most 40 MiB: MISSED (41.0 MiB)"), "{lines:?}");
        assert!(has("N=1000: manager peak RSS at most 96 MiB: met (90.0 MiB)"), "{lines:?}");
        assert!(has("N=50: API requests per machine at most 15: met (10.0)"), "{lines:?}");
        assert!(has("N=1000: API requests per machine at most 15: MISSED (16.0)"), "{lines:?}");
        assert!(has("N=200: ahead of the peer: not measured"), "{lines:?}");
    }
}
