//! The table a run ends with: faults by kind, what the machines did, invariant violations by
//! kind (each must be 0, with the first details of any), the managers' peak RSS, wall time.

use super::Summary;
use super::ledger::{Fault, Ledger, Violation};
use std::fmt::Write as _;

/// The table of invariants (`kinds`, each with its count) and the first details of any violated.
pub fn write_violations(out: &mut String, l: &Ledger, kinds: &[Violation]) {
    let _ = writeln!(out, "\n| invariant violated | count |\n|---|---|");
    for &v in kinds {
        let _ = writeln!(out, "| {} | {} |", v.label(), l.violations(v).0);
    }
    let _ = writeln!(out, "| **all** | **{}** |", l.total_violations());
    for &v in kinds {
        for detail in l.violations(v).1 {
            let _ = writeln!(out, "  - {}: {}", v.label(), detail.chars().take(600).collect::<String>());
        }
    }
}

pub fn minutes(seconds: f64) -> String {
    format!("{}m{:02}s", (seconds / 60.0) as u64, (seconds % 60.0) as u64)
}

pub fn render(summary: &Summary) -> String {
    let (c, l) = (&summary.config, &summary.ledger);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nchaos run: seed {}, {} hosts, {} manager replica(s){}, {} rounds (first: {} machines), wall {}",
        c.seed,
        c.hosts,
        c.replicas,
        if c.replicas > 1 { " with --leader-elect" } else { "" },
        l.counter("rounds"),
        if c.storm_machines > 0 { c.storm_machines } else { c.machines_per_round },
        minutes(summary.wall.as_secs_f64())
    );
    let _ = writeln!(out, "\n| fault | injected |\n|---|---|");
    for f in Fault::ALL {
        let _ = writeln!(out, "| {} | {} |", f.label(), l.faults(f));
    }
    let total: u64 = Fault::ALL.iter().map(|f| l.faults(*f)).sum();
    let _ = writeln!(out, "| **all** | **{total}** |");
    for (what, n) in l.counters_with_prefix("kills: ") {
        let _ = writeln!(out, "| (kills of the {what}) | {n} |");
    }

    let _ = writeln!(out, "\n| machines and hosts | count |\n|---|---|");
    for key in [
        "machines created",
        "machines provisioned",
        "machines failed (planned: the bootstrap exits 3)",
        "machines failed on a full disk",
        "machines deleted",
        "machines deleted by faults (mid-bootstrap or early)",
        "replica exited by itself, started again",
        "watch: consumer change across a relist (not judged)",
        "orphaned claim (its machine is gone), repaired by hand",
    ] {
        let _ = writeln!(out, "| {key} | {} |", l.counter(key));
    }
    for (cause, n) in l.counters_with_prefix("quarantined: ") {
        let _ = writeln!(out, "| host quarantined, then repaired by hand: {cause} | {n} |");
    }

    write_violations(&mut out, l, &Violation::ALL);
    let _ =
        writeln!(out, "\nmanager peak RSS (VmHWM, largest of every replica process): {:.1} MiB (bound {:.0} MiB)", l.peak_rss_mib(), c.rss_bound_mib);
    let _ = writeln!(out, "wall time: {} ({:.0} s); logs: {}", minutes(summary.wall.as_secs_f64()), summary.wall.as_secs_f64(), summary.logs);
    let _ = writeln!(out, "result: {}", if summary.ok() { "PASS (0 violations)" } else { "FAIL" });
    out
}
