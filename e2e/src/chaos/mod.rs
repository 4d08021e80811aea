//! `make chaos`: faults repeated against the SSHMachine and SSHHost controllers until the figures
//! mean something, with the invariants checked after every round.
//!
//! The bed ([`bed`]) is real: etcd and kube-apiserver, sshd hosts in network namespaces, and
//! `capssh manager` replicas with leader election. A run is a series of rounds ([`round`]); each
//! creates machines as Cluster API would, with bootstrap data that counts its runs on the host,
//! sleeps 0-5 s and carries secret fixtures ([`bootstrap_data`]), while the fault loops
//! ([`faults`]) kill managers, cut SSH, hang sshd, blackhole hosts, fill disks and delete
//! machines mid-bootstrap. The first round is a claim storm (more machines than hosts). After
//! every round the invariants ([`checks`], [`watch`]) are checked and counted in the
//! [`ledger::Ledger`]; [`report`] prints the table.
//!
//! Randomness comes from one seed, printed at the start (`CHAOS_SEED` replays it). Timing on a
//! shared machine is not replayable, so a replay draws the same faults in the same order at the
//! same gaps, not at the same instants of the managers' work.

pub mod bed;
pub mod checks;
pub mod faults;
pub mod ledger;
pub mod reboots;
pub mod report;
pub mod rng;
pub mod round;
pub mod subject;
pub mod watch;

use ledger::{Fault, Ledger, Violation};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The namespace of every object of a run (and of the leader-election Lease).
pub const NS: &str = "chaos";

/// The fake secrets in every machine's bootstrap data: a kubeadm token in a runcmd line and a
/// password in a written file. Neither may appear in any status, Event or manager log.
pub const FIXTURES: [&str; 2] = ["abcdef.0123456789abcdef", "chaos-fixture-secret"];

/// What a run does. `Config::full()` is `make chaos`; `Config::sample()` the suite's sample.
#[derive(Clone, Debug)]
pub struct Config {
    pub seed: u64,
    pub suite: String,
    pub hosts: usize,
    /// Rounds at least; more are run (up to `max_rounds`) until the minimum counts below are met.
    pub rounds: usize,
    pub max_rounds: usize,
    pub machines_per_round: usize,
    /// Machines of the first round (a claim storm when above `hosts`); 0: no storm round.
    pub storm_machines: usize,
    pub replicas: usize,
    pub min_kills: u64,
    pub min_mid_bootstrap_deletes: u64,
    /// Mean seconds a leader lives between kills (after it took the lease).
    pub kill_every_seconds: f64,
    /// Mean seconds between the other faults.
    pub fault_every_seconds: f64,
    /// Share of machines whose bootstrap fails on purpose (its log tail goes into a condition).
    pub fail_percent: f64,
    /// Chance that a round has full-disk hosts.
    pub full_disk_chance: f64,
    /// The managers' --cleanup-give-up-seconds.
    pub give_up_seconds: u64,
    /// How long a round's machines get to settle (provisioned, failed or gone) per wave.
    pub settle_timeout_seconds: u64,
    /// The bound on the managers' peak RSS (VmHWM): twice what `make bench` measured at 200 hosts.
    pub rss_bound_mib: f64,
}

impl Config {
    /// The full run: 100 hosts, a 200-machine claim storm, then rounds of 40 until at least 100
    /// manager kills and 20 deletes mid-bootstrap.
    pub fn full(seed: u64) -> Self {
        Config {
            seed,
            suite: "chaos".into(),
            hosts: 100,
            rounds: 12,
            max_rounds: 40,
            machines_per_round: 40,
            storm_machines: 200,
            replicas: 2,
            min_kills: 100,
            min_mid_bootstrap_deletes: 20,
            kill_every_seconds: 8.0,
            fault_every_seconds: 2.0,
            fail_percent: 10.0,
            full_disk_chance: 0.5,
            give_up_seconds: 90,
            settle_timeout_seconds: 600,
            rss_bound_mib: 128.0,
        }
    }

    /// A representative sample for the suite: every kind of fault, a small storm, minutes.
    pub fn sample(seed: u64) -> Self {
        Config {
            suite: "chaos-sample".into(),
            hosts: 5,
            rounds: 3,
            max_rounds: 3,
            machines_per_round: 5,
            storm_machines: 8,
            min_kills: 0,
            min_mid_bootstrap_deletes: 0,
            kill_every_seconds: 8.0,
            fault_every_seconds: 2.5,
            fail_percent: 15.0,
            full_disk_chance: 1.0,
            settle_timeout_seconds: 300,
            ..Config::full(seed)
        }
    }
}

/// Bootstrap data for machine `name`: it records its run on the host (one line per run, which
/// outlives resets), prints the secret fixtures into its log, sleeps, and either writes Cluster
/// API's sentinel or fails on purpose (exit 3: its log tail, fixtures included, goes into a
/// condition, redacted).
pub fn bootstrap_data(name: &str, sleep: f64, fail: bool) -> String {
    let end = if fail {
        // No ": " in a plain YAML scalar: it would read as a mapping, and the data as invalid.
        "  - echo 'chaos - failing on purpose'\n  - exit 3\n".to_string()
    } else {
        "  - mkdir -p /run/cluster-api && echo success > /run/cluster-api/bootstrap-success.complete\n".to_string()
    };
    format!(
        "#cloud-config
write_files:
  - path: /etc/kubernetes/chaos/join.yaml
    permissions: '0600'
    content: |
      machine: {name}
      password: {secret}
runcmd:
  - echo 'run {name}' >> /var/lib/capssh/bootstrap-count
  - echo 'kubeadm join 198.18.0.100:6443 --token {token} --discovery-token-unsafe-skip-ca-verification'
  - cat /etc/kubernetes/chaos/join.yaml
  - grep -o 'chaos-fixture-[a-z]*' /etc/kubernetes/chaos/join.yaml
  - sleep {sleep}
{end}",
        token = FIXTURES[0],
        secret = FIXTURES[1],
    )
}

/// What a run found.
pub struct Summary {
    pub config: Config,
    pub ledger: Arc<Ledger>,
    pub wall: Duration,
    pub logs: String,
}

impl Summary {
    pub fn ok(&self) -> bool {
        self.ledger.total_violations() == 0
    }
}

/// Runs the rounds; every violation is counted, not raised (the report shows them all). An
/// error is the harness failing, not the product.
pub async fn run(config: Config) -> anyhow::Result<Summary> {
    let started = Instant::now();
    eprintln!("chaos: seed {} (replay with CHAOS_SEED={})", config.seed, config.seed);
    let ledger = Arc::new(Ledger::default());
    let bed = bed::Bed::start(config.clone(), ledger.clone()).await?;
    let watches = Arc::new(watch::start(&bed.client, ledger.clone()));
    let checks = checks::Checks::default();
    let sampler = {
        let bed = bed.clone();
        tokio::spawn(async move {
            loop {
                bed.replicas.sample_rss();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    // Every host Available before the first machine: the pool as a platform team leaves it.
    checks.hosts_settled(&*bed, &watches, Duration::from_secs(180), "start").await;

    let mut index = 1;
    loop {
        let enough = index > config.rounds
            && ledger.faults(Fault::ManagerKill) >= config.min_kills
            && ledger.faults(Fault::DeleteMidBootstrap) >= config.min_mid_bootstrap_deletes;
        if enough || index > config.max_rounds {
            break;
        }
        let machines = if index == 1 && config.storm_machines > 0 { config.storm_machines } else { config.machines_per_round };
        round::run(&bed, &watches, &checks, index, machines).await?;
        index += 1;
    }
    sampler.abort();
    let _ = sampler.await;
    bed.replicas.sample_rss();
    checks.logs(&*bed)?;
    checks.memory(&*bed);
    let logs = bed.plane.dir.display().to_string();
    drop(watches);
    drop(bed);
    Ok(Summary { config, ledger, wall: started.elapsed(), logs })
}

/// The violation kinds with their counts (all of them, zeros included).
pub fn violations(ledger: &Ledger) -> Vec<(Violation, u64, Vec<String>)> {
    Violation::ALL
        .iter()
        .map(|&v| {
            let (n, details) = ledger.violations(v);
            (v, n, details)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_bootstrap_data_is_valid_both_ways() {
        for fail in [false, true] {
            let data = super::bootstrap_data("r01-m000", 1.5, fail);
            let job = capssh::bootstrap::plan(data.as_bytes(), capssh::bootstrap::Format::CloudConfig, &Default::default()).unwrap();
            assert!(job.secrets.iter().any(|s| s.contains(super::FIXTURES[1])), "the password is known as a secret");
        }
    }
}
