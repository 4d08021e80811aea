//! A sample of `make chaos-reboots` (e2e/src/chaos/reboots): two systemd nodes, one cycle each,
//! with a real reboot while capssh prepares one node, while the bootstrap runs on the other,
//! and while the reset runs on both; then every invariant and the outcome each reboot requires.
//! The node farm is taken under its lock, so this never runs beside another node suite.

use capssh_e2e::chaos::ledger::Fault;
use capssh_e2e::chaos::{reboots, rng};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_rebooted_in_each_phase_breaks_no_invariant() {
    let seed = std::env::var("CHAOS_SEED").ok().and_then(|s| s.trim().parse().ok()).unwrap_or_else(rng::fresh_seed);
    let summary = reboots::run(reboots::Config::sample(seed)).await.unwrap();
    let table = reboots::report::render(&summary);
    println!("{table}");
    assert!(summary.ok(), "invariants violated (replay with CHAOS_SEED={seed}):\n{table}");
    for fault in Fault::REBOOTS {
        assert!(summary.ledger.faults(fault) > 0, "no reboot hit its phase: {}\n{table}", fault.label());
    }
    let ledger = &summary.ledger;
    assert!(
        ledger.counter("bootstraps lost to a reboot, reported failed") + ledger.counter("bootstraps that ended just before the reboot (provisioned)")
            > 0,
        "{table}"
    );
}
