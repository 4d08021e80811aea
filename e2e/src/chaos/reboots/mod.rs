//! `make chaos-reboots`: real node reboots while capssh prepares a host, while the bootstrap
//! runs, and while the reset runs after the machine is deleted, with the invariants of
//! `make chaos` checked ([`super::checks`]) and the outcome each reboot must have.
//!
//! The bed is real: etcd and kube-apiserver, `capssh manager`, an artifact mirror built by
//! `capssh artifacts build`, and systemd nodes ([`crate::nodes`]) that reboot for real as far
//! as capssh can tell (its sessions drop, every process dies, `/run` empties, a new boot id).
//! Each node runs cycles ([`cycle`]): a machine pinned to it with an Artifacts preparation and
//! bootstrap data that counts its runs, sleeps and carries the secret fixtures; the node is
//! rebooted while the phase the cycle aims at runs on it (seen on the node: the job's process
//! alive in this boot), until every phase had its share of reboots.
//!
//! What a reboot must lead to, as capssh's README and code say:
//! - during **preparation**: the job is lost, started again (preparing is idempotent) and the
//!   machine is provisioned; the preparation's id is in the host's journal twice, no more;
//! - during the **bootstrap**: the job is lost and the machine Failed (`BootstrapFailed`, "the
//!   job's process is gone"), never run again (the bootstrap data counts its runs);
//! - during the **reset**: the reset is started again, and the host ends Available and clean.

pub mod cycle;
pub mod report;

use super::checks::Checks;
use super::ledger::{Fault, Ledger};
use super::subject::{ExecHosts, Subject};
use super::{NS, rng, watch};
use crate::bench::procfs;
use crate::capi::{install_capssh_crds, install_crds};
use crate::manager::start_manager;
use crate::mgmt::ManagementPlane;
use crate::mirror::{MirrorFolder, MirrorServer, build_mirror};
use crate::nodes::{NodeFarm, RebootReport};
use crate::process::Daemon;
use crate::scenario;
use crate::tools::artifacts_dir;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The Kubernetes version every machine of the run asks for (the mirror holds it).
pub const VERSION: &str = "v1.36.3";
/// The cluster every machine of the run belongs to.
pub const CLUSTER: &str = "reboots";

/// What a run does. `Config::full()` is `make chaos-reboots`; `Config::sample()` the suite's.
#[derive(Clone, Debug)]
pub struct Config {
    pub seed: u64,
    pub suite: String,
    pub nodes: usize,
    /// Reboots wanted in each phase; each node runs cycles until every phase has them.
    pub min_per_phase: u64,
    /// At most this many cycles per node (reboots that miss their phase do not count).
    pub max_cycles_per_node: usize,
    /// How long the bootstrap sleeps: its window for a reboot.
    pub bootstrap_seconds: f64,
    /// The manager's --cleanup-give-up-seconds.
    pub give_up_seconds: u64,
    /// How long a machine gets to be provisioned or failed, and to be gone once deleted.
    pub settle_timeout_seconds: u64,
    pub rss_bound_mib: f64,
}

impl Config {
    /// Four nodes, at least 10 reboots in each phase.
    pub fn full(seed: u64) -> Self {
        Config {
            seed,
            suite: "chaos-reboots".into(),
            nodes: 4,
            min_per_phase: 10,
            max_cycles_per_node: 16,
            bootstrap_seconds: 8.0,
            give_up_seconds: 300,
            settle_timeout_seconds: 420,
            rss_bound_mib: 128.0,
        }
    }

    /// Two nodes, one cycle each: a reboot in each phase (the reset's on both nodes).
    pub fn sample(seed: u64) -> Self {
        Config { suite: "chaos-reboots-sample".into(), nodes: 2, min_per_phase: 1, max_cycles_per_node: 2, ..Config::full(seed) }
    }
}

/// Everything a run works on. Fields drop in order: the mirror's server before the farm,
/// whose bridge holds the address it listens on.
pub struct RebootBed {
    _server: MirrorServer,
    pub farm: Arc<NodeFarm>,
    pub client: kube::Client,
    pub ledger: Arc<Ledger>,
    pub config: Config,
    /// spec.preparation.artifacts of every machine.
    pub mirror_url: String,
    pub mirror_pin: String,
    manager: Mutex<Daemon>,
    reboots: Mutex<Vec<RebootReport>>,
    _mirror: MirrorFolder,
    plane: ManagementPlane,
}

impl RebootBed {
    async fn start(config: Config, ledger: Arc<Ledger>) -> anyhow::Result<RebootBed> {
        let work = artifacts_dir(&config.suite);
        let mirror = {
            let root = work.join("mirror");
            tokio::task::spawn_blocking(move || build_mirror(&root, VERSION)).await??
        };
        let farm = {
            let (suite, nodes) = (config.suite.clone(), config.nodes);
            Arc::new(tokio::task::spawn_blocking(move || NodeFarm::start(&suite, nodes)).await??)
        };
        let server = MirrorServer::start(&mirror.root, (farm.gateway, 0).into())?;
        let plane = ManagementPlane::start(&config.suite).await?;
        let client = plane.client().await?;
        install_crds(&client).await?;
        install_capssh_crds(&client).await?;
        scenario::namespace(&client, NS).await?;
        scenario::register_nodes(&client, NS, &farm, json!({})).await?;
        scenario::provisioned_cluster(&client, NS, CLUSTER).await?;
        let give_up = config.give_up_seconds.to_string();
        let manager = start_manager(&plane, "capssh", &["--probe-interval-seconds", "30", "--cleanup-give-up-seconds", &give_up])?;
        eprintln!("chaos-reboots: {} nodes, mirror {}, logs in {}", farm.nodes.len(), server.url(), plane.dir.display());
        Ok(RebootBed {
            mirror_url: server.url(),
            mirror_pin: mirror.sums_sha256.clone(),
            farm,
            client,
            ledger,
            config,
            manager: Mutex::new(manager),
            reboots: Mutex::default(),
            _server: server,
            _mirror: mirror,
            plane,
        })
    }

    /// Reboots node `i` (blocking work, off the async threads) and keeps what it took.
    pub async fn reboot(&self, i: usize) -> anyhow::Result<RebootReport> {
        let farm = self.farm.clone();
        let report = tokio::task::spawn_blocking(move || farm.reboot(i)).await??;
        self.reboots.lock().unwrap_or_else(|e| e.into_inner()).push(report.clone());
        Ok(report)
    }

    fn sample_rss(&self) {
        let pid = self.manager.lock().unwrap_or_else(|e| e.into_inner()).pid();
        if let Some(sample) = procfs::sample(pid) {
            self.ledger.rss(sample.peak_rss_mib);
        }
    }
}

impl Subject for RebootBed {
    fn exec_hosts(&self) -> Arc<dyn ExecHosts> {
        self.farm.clone()
    }
    fn client(&self) -> &kube::Client {
        &self.client
    }
    fn ledger(&self) -> &Ledger {
        &self.ledger
    }
    fn dir(&self) -> &Path {
        &self.plane.dir
    }
    fn manager_logs(&self) -> Vec<PathBuf> {
        vec![self.plane.dir.join("capssh.log")]
    }
    fn rss_bound_mib(&self) -> f64 {
        self.config.rss_bound_mib
    }
}

/// What a run found.
pub struct Summary {
    pub config: Config,
    pub ledger: Arc<Ledger>,
    pub wall: Duration,
    pub logs: String,
    pub reboots: Vec<RebootReport>,
}

impl Summary {
    pub fn ok(&self) -> bool {
        self.ledger.total_violations() == 0
    }

    /// Whether every phase had its share of reboots.
    pub fn enough(&self) -> bool {
        Fault::REBOOTS.iter().all(|f| self.ledger.faults(*f) >= self.config.min_per_phase)
    }
}

/// Runs the cycles on every node at once, then the checks; every violation is counted, not
/// raised. An error is the harness failing, not the product.
pub async fn run(config: Config) -> anyhow::Result<Summary> {
    let started = Instant::now();
    eprintln!("chaos-reboots: seed {} (replay with CHAOS_SEED={})", config.seed, config.seed);
    let ledger = Arc::new(Ledger::default());
    let bed = Arc::new(RebootBed::start(config.clone(), ledger.clone()).await?);
    let watches = Arc::new(watch::start(&bed.client, ledger.clone()));
    let checks = Arc::new(Checks::default());
    let sampler = {
        let bed = bed.clone();
        tokio::spawn(async move {
            loop {
                bed.sample_rss();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    checks.hosts_settled(&*bed, &watches, Duration::from_secs(180), "start").await;
    let drivers: Vec<_> = (0..config.nodes)
        .map(|node| {
            let rng = rng::Rng::derive(config.seed, &format!("node-{node}"));
            tokio::spawn(cycle::drive(bed.clone(), watches.clone(), checks.clone(), node, rng))
        })
        .collect();
    let mut failed = None;
    for driver in drivers {
        if let Err(err) = driver.await? {
            eprintln!("chaos-reboots: a node's driver failed: {err:#}");
            failed.get_or_insert(err);
        }
    }
    let result = async {
        if let Some(err) = failed {
            return Err(err);
        }
        checks.hosts_settled(&*bed, &watches, Duration::from_secs(240), "end").await;
        checks.hosts(&*bed, &watches).await?;
        checks.events(&*bed).await?;
        checks.logs(&*bed)?;
        bed.sample_rss();
        checks.memory(&*bed);
        anyhow::Ok(())
    }
    .await;
    sampler.abort();
    if result.is_err() {
        bed.farm.collect_logs();
    }
    result?;
    let reboots = bed.reboots.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let logs = bed.plane.dir.display().to_string();
    drop(watches);
    drop(bed);
    Ok(Summary { config, ledger, wall: started.elapsed(), logs, reboots })
}
