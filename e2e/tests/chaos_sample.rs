//! A short sample of `make chaos` (e2e/src/chaos): five hosts, two manager replicas with leader
//! election, a small claim storm and one more round, every kind of fault at least once, and
//! every invariant checked after each round. The full run is `make chaos`.

use capssh_e2e::chaos::{self, Config, ledger::Fault, report, rng};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sample_of_the_chaos_run_breaks_no_invariant() {
    let seed = std::env::var("CHAOS_SEED").ok().and_then(|s| s.trim().parse().ok()).unwrap_or_else(rng::fresh_seed);
    let summary = chaos::run(Config::sample(seed)).await.unwrap();
    let table = report::render(&summary);
    println!("{table}");
    assert!(summary.ok(), "invariants violated (replay with CHAOS_SEED={seed}):\n{table}");
    let ledger = &summary.ledger;
    assert!(ledger.faults(Fault::ManagerKill) > 0 && ledger.faults(Fault::FullDisk) > 0, "the sample injected the heavy faults:\n{table}");
    assert!(ledger.counter("machines provisioned") > 0, "machines were provisioned under the faults:\n{table}");
}
