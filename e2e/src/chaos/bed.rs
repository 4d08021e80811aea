//! The test bed of a chaos run: a real management plane, a farm of sshd hosts registered as
//! SSHHosts, and `capssh manager` replicas that the run kills and starts again.

use super::ledger::Ledger;
use super::{Config, NS};
use crate::bench::procfs;
use crate::capi::{install_capssh_crds, install_crds};
use crate::hosts::HostFarm;
use crate::manager::start_manager;
use crate::mgmt::ManagementPlane;
use crate::process::Daemon;
use crate::scenario;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use serde_json::json;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// The cluster every machine of the run belongs to.
pub const CLUSTER: &str = "chaos";

/// One replica slot: a manager process, started again (same log file) after each kill.
struct Slot {
    name: String,
    daemon: Option<Daemon>,
}

/// The manager replicas. With more than one, they run with `--leader-elect`.
pub struct Replicas {
    plane: Arc<ManagementPlane>,
    args: Vec<String>,
    slots: Mutex<Vec<Slot>>,
    ledger: Arc<Ledger>,
}

impl Replicas {
    fn start(plane: Arc<ManagementPlane>, config: &Config, ledger: Arc<Ledger>) -> anyhow::Result<Self> {
        let mut args: Vec<String> =
            vec!["--probe-interval-seconds".into(), "60".into(), "--cleanup-give-up-seconds".into(), config.give_up_seconds.to_string()];
        if config.replicas > 1 {
            args.extend(["--leader-elect".into(), "--leader-election-namespace".into(), NS.into()]);
        }
        let replicas = Replicas { plane, args, slots: Mutex::new(Vec::new()), ledger };
        for i in 0..config.replicas.max(1) {
            let name = format!("capssh-{}", (b'a' + i as u8) as char);
            let daemon = replicas.spawn(&name)?;
            replicas.slots().push(Slot { name, daemon: Some(daemon) });
        }
        Ok(replicas)
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Vec<Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn spawn(&self, name: &str) -> anyhow::Result<Daemon> {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        start_manager(&self.plane, name, &args)
    }

    /// The log files of every replica (one per slot, appended across restarts).
    pub fn logs(&self) -> Vec<PathBuf> {
        self.slots().iter().map(|s| self.plane.dir.join(format!("{}.log", s.name))).collect()
    }

    pub fn count(&self) -> usize {
        self.slots().len()
    }

    /// PIDs of the running replicas, by slot.
    pub fn pids(&self) -> Vec<Option<u32>> {
        self.slots().iter_mut().map(|s| s.daemon.as_mut().and_then(|d| d.is_running().then(|| d.pid()))).collect()
    }

    /// Reads every running replica's VmHWM into the ledger.
    pub fn sample_rss(&self) {
        for pid in self.pids().into_iter().flatten() {
            if let Some(sample) = procfs::sample(pid) {
                self.ledger.rss(sample.peak_rss_mib);
            }
        }
    }

    /// SIGKILL to the replica of `slot` (its peak memory read first), then a new process in the
    /// slot, as a Deployment would start one.
    pub fn kill_and_restart(&self, slot: usize) -> anyhow::Result<()> {
        let mut slots = self.slots();
        let entry = slots.get_mut(slot).ok_or_else(|| anyhow::anyhow!("no replica slot {slot}"))?;
        if let Some(mut daemon) = entry.daemon.take() {
            if let Some(sample) = procfs::sample(daemon.pid()) {
                self.ledger.rss(sample.peak_rss_mib);
            }
            daemon.kill();
        }
        entry.daemon = Some(self.spawn(&entry.name)?);
        Ok(())
    }

    /// Starts any replica that exited by itself (a leader that could not renew exits, by design).
    pub fn revive(&self) -> anyhow::Result<usize> {
        let mut revived = 0;
        let mut slots = self.slots();
        for entry in slots.iter_mut() {
            let alive = entry.daemon.as_mut().is_some_and(|d| d.is_running());
            if !alive {
                entry.daemon = Some(self.spawn(&entry.name)?);
                revived += 1;
            }
        }
        Ok(revived)
    }

    /// The slot whose process holds the lease now (None during a failover). One replica
    /// without leader election is always the leader.
    pub async fn leader(&self, client: &kube::Client) -> Option<usize> {
        let pids = self.pids();
        if pids.len() == 1 {
            return pids[0].map(|_| 0);
        }
        let lease = Api::<Lease>::namespaced(client.clone(), NS).get_opt("capssh-leader").await.ok()??;
        let holder = lease.spec?.holder_identity?;
        let pid: u32 = holder.strip_prefix("capssh-")?.parse().ok()?;
        pids.iter().position(|p| *p == Some(pid))
    }
}

impl Drop for Replicas {
    fn drop(&mut self) {
        self.sample_rss();
    }
}

/// Everything a run works on.
pub struct Bed {
    pub farm: Arc<HostFarm>,
    pub plane: Arc<ManagementPlane>,
    pub client: kube::Client,
    pub replicas: Replicas,
    pub ledger: Arc<Ledger>,
    pub config: Config,
}

impl Bed {
    pub async fn start(config: Config, ledger: Arc<Ledger>) -> anyhow::Result<Arc<Bed>> {
        let farm = {
            let (suite, hosts) = (config.suite.clone(), config.hosts);
            tokio::task::spawn_blocking(move || HostFarm::start(&suite, hosts)).await??
        };
        let plane = Arc::new(ManagementPlane::start(&config.suite).await?);
        let client = plane.client().await?;
        install_crds(&client).await?;
        install_capssh_crds(&client).await?;
        scenario::namespace(&client, NS).await?;
        scenario::register_farm(&client, NS, &farm, json!({"role": "worker"})).await?;
        scenario::provisioned_cluster(&client, NS, CLUSTER).await?;
        let replicas = Replicas::start(plane.clone(), &config, ledger.clone())?;
        eprintln!("chaos: {} hosts, {} manager replica(s), logs in {}", farm.hosts.len(), replicas.count(), plane.dir.display());
        Ok(Arc::new(Bed { farm: Arc::new(farm), plane, client, replicas, ledger, config }))
    }

    /// Runs a blocking farm operation off the async threads.
    pub async fn on_farm<T: Send + 'static>(&self, op: impl FnOnce(&HostFarm) -> anyhow::Result<T> + Send + 'static) -> anyhow::Result<T> {
        let farm = self.farm.clone();
        tokio::task::spawn_blocking(move || op(&farm)).await?
    }

    pub fn host_index(&self, name: &str) -> Option<usize> {
        self.farm.hosts.iter().position(|h| h.name == name)
    }
}

impl super::subject::Subject for Bed {
    fn exec_hosts(&self) -> Arc<dyn super::subject::ExecHosts> {
        self.farm.clone()
    }
    fn client(&self) -> &kube::Client {
        &self.client
    }
    fn ledger(&self) -> &Ledger {
        &self.ledger
    }
    fn dir(&self) -> &std::path::Path {
        &self.plane.dir
    }
    fn manager_logs(&self) -> Vec<PathBuf> {
        self.replicas.logs()
    }
    fn rss_bound_mib(&self) -> f64 {
        self.config.rss_bound_mib
    }
}
