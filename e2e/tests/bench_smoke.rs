//! The benchmark at a tiny size, as a smoke check that it runs end to end and produces numbers.
//! No time is asserted: `make bench` is where the numbers come from. BYOH runs too when its
//! binaries are already built (`hack/tools/build.sh byoh-manager byoh-agent`); this test never
//! builds them (CI does not), and then checks that the results say why BYOH did not run.

use capssh_e2e::bench::{self, Config, peer, report};

#[tokio::test]
async fn the_benchmark_runs_at_three_hosts_and_reports_numbers() {
    // At N=3 a fifth of the hosts rounds to none: the blackholed run says so and is skipped.
    let config = Config { sizes: vec![3], floor_runs: 1, phase_timeout_seconds: 180, ..Config::default() };
    let peers = peer::Peers::find(false, std::path::Path::new("/dev/null"));
    assert!(!peers.k0smotron.reason.is_empty(), "the peer's status says why it did not run");
    let result = bench::run_size(&config, 3, &peers).await.unwrap();
    assert_eq!(result.floor.failures, 0, "{:?}", result.floor.first_error);
    assert!(result.floor.wall_seconds > 0.0 && result.floor.cpu_seconds > 0.0);
    let capssh = result.capssh.as_ref().unwrap_or_else(|| panic!("capssh: {:?}", result.capssh_error));
    assert!(capssh.provision.wall_seconds > 0.0);
    assert!(capssh.provision.requests.total > 0, "the audit log counted the manager's requests");
    assert!(capssh.manager_end.peak_rss_mib > 0.0 && capssh.provision.cpu_seconds > 0.0);
    assert!(capssh.reconcile_provision["SSHMachine"].reconciles > 0.0, "reconciles read from the manager's metrics");
    match &peers.byoh {
        Ok(_) => {
            let byoh = result.byoh.as_ref().unwrap_or_else(|| panic!("BYOH: {:?}", result.byoh_error));
            assert!(byoh.provision.wall_seconds > 0.0 && byoh.agents_after_provision.running == 3);
            assert!(byoh.provision.requests.manager.total > 0 && byoh.registered.requests.agents.total > 0, "the audit log counted both sides");
            assert!(byoh.reconcile_provision["byomachine"].reconciles > 0.0, "reconciles read from the manager's metrics");
        }
        Err(_) => assert!(result.byoh_error.as_deref().is_some_and(|e| e.contains("not built")), "{:?}", result.byoh_error),
    }
    assert!(result.hosts_idle.processes >= 3 && result.hosts_idle.pss_mib_total > 0.0, "{:?}", result.hosts_idle);
    assert!(result.capssh_blackholed_error.as_deref().is_some_and(|e| e.contains("rounds to none")), "{:?}", result.capssh_blackholed_error);
    let table = report::render(&config, std::slice::from_ref(&result));
    assert!(table.contains("| 3 |"), "{table}");
}
