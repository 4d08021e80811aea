//! The table a reboot run ends with: reboots by phase, what the machines did, every invariant
//! (each must be 0), how long the reboots took, the manager's peak RSS and the wall time.

use super::Summary;
use crate::chaos::ledger::{Fault, Violation};
use crate::chaos::report::{minutes, write_violations};
use std::fmt::Write as _;

pub fn render(summary: &Summary) -> String {
    let (c, l) = (&summary.config, &summary.ledger);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nchaos-reboots run: seed {}, {} nodes, at least {} reboots per phase wanted, wall {}",
        c.seed,
        c.nodes,
        c.min_per_phase,
        minutes(summary.wall.as_secs_f64())
    );
    let _ = writeln!(out, "\n| fault | injected |\n|---|---|");
    for f in Fault::REBOOTS {
        let _ = writeln!(out, "| {} | {} |", f.label(), l.faults(f));
    }
    let total: u64 = Fault::REBOOTS.iter().map(|f| l.faults(*f)).sum();
    let _ = writeln!(out, "| **all** | **{total}** |");

    let _ = writeln!(out, "\n| machines and hosts | count |\n|---|---|");
    for key in [
        "machines created",
        "machines provisioned",
        "preparations lost to a reboot, started again, then done",
        "preparations that ended just before the reboot",
        "bootstraps lost to a reboot, reported failed",
        "bootstraps that ended just before the reboot (provisioned)",
        "resets lost to a reboot, run again",
        "resets that ended just before the reboot",
        "reboots that missed their phase (prepare)",
        "reboots that missed their phase (bootstrap)",
        "reboots that missed their phase (cleanup)",
    ] {
        let _ = writeln!(out, "| {key} | {} |", l.counter(key));
    }
    for (cause, n) in l.counters_with_prefix("quarantined: ") {
        let _ = writeln!(out, "| host quarantined, then repaired by hand: {cause} | {n} |");
    }
    write_violations(&mut out, l, &Violation::REBOOT_RUN);

    let took: Vec<f64> = summary.reboots.iter().map(|r| r.took.as_secs_f64()).collect();
    if !took.is_empty() {
        let mean = took.iter().sum::<f64>() / took.len() as f64;
        let max = took.iter().copied().fold(0.0, f64::max);
        let replugged = summary.reboots.iter().filter(|r| r.replugged).count();
        let _ = writeln!(
            out,
            "\nreboots: {} (power cut to sshd answering: mean {mean:.1} s, max {max:.1} s; link re-plugged after {replugged})",
            took.len()
        );
    }
    let _ = writeln!(out, "manager peak RSS (VmHWM): {:.1} MiB (bound {:.0} MiB)", l.peak_rss_mib(), c.rss_bound_mib);
    let _ = writeln!(out, "wall time: {} ({:.0} s); logs: {}", minutes(summary.wall.as_secs_f64()), summary.wall.as_secs_f64(), summary.logs);
    let verdict = match (summary.ok(), summary.enough()) {
        (true, true) => "PASS (0 violations)",
        (true, false) => "INCOMPLETE (0 violations, but too few reboots hit their phase)",
        _ => "FAIL",
    };
    let _ = writeln!(out, "result: {verdict}");
    out
}
