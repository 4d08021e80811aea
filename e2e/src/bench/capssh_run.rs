//! capssh on the hosts: a real API server with an audit log, N SSHHosts, N Machines with their
//! bootstrap Secrets and SSHMachines (as Cluster API's MachineSet and CABPK would create them;
//! Cluster API's controllers do not run), the manager under its own client identity.

use super::observe::{self, Latency, Requests, Scrape};
use super::procfs::{self, ProcSample};
use super::{CREATE_CONCURRENCY, create_all, machine_seconds};
use crate::capi::{install_capssh_crds, install_crds};
use crate::hosts::HostFarm;
use crate::manager::http_get;
use crate::mgmt::ManagementPlane;
use crate::process::Daemon;
use crate::scenario;
use crate::tools::{artifacts_dir, capssh, free_port};
use capssh::api::v1alpha1::{HostPhase, SSHHost, SSHMachine};
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::Serialize;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::Command;
use std::time::{Duration, Instant};

const NS: &str = "bench";
const CLUSTER: &str = "bench";
const CLEANUP_GIVE_UP_SECONDS: u64 = 1800;

/// One phase of the run: its wall time and what the manager spent in it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Phase {
    pub wall_seconds: f64,
    /// The manager's CPU seconds.
    pub cpu_seconds: f64,
    /// What the rest cost in the same time: kube-apiserver, etcd, the hosts' sshd (with sessions).
    pub apiserver_cpu_seconds: f64,
    pub etcd_cpu_seconds: f64,
    pub hosts_sshd_cpu_seconds: f64,
    pub requests: Requests,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct CapsshRun {
    pub max_concurrent_hosts: usize,
    /// SSHHosts created → all Available (the manager probes each once).
    pub hosts_ready: Phase,
    /// Machines created → all SSHMachines provisioned: the number compared with the floor.
    pub provision: Phase,
    /// How long creating the N Machines, Secrets and SSHMachines took (inside `provision`).
    pub create_seconds: f64,
    /// Per machine, from its SSHMachine created to provisioned seen.
    pub machine_p50_seconds: f64,
    pub machine_p90_seconds: f64,
    pub machine_max_seconds: f64,
    /// SSHMachines deleted → all gone and every host Available again.
    pub delete: Phase,
    /// Why the delete phase has no numbers (the provisioning's are kept).
    pub delete_error: Option<String>,
    /// HostReleased reasons seen while the SSHMachines were being deleted, and on how many machines.
    pub delete_waits: BTreeMap<String, usize>,
    /// The manager after the hosts were ready (idle with N hosts), after provisioning, at the end.
    pub manager_idle: ProcSample,
    pub manager_after_provision: ProcSample,
    pub manager_end: ProcSample,
    /// From the manager's /metrics, during `provision` and `delete`.
    pub reconcile_provision: HashMap<String, Latency>,
    pub reconcile_delete: HashMap<String, Latency>,
    /// The same in steady state: `steady_seconds` after provisioning with nothing created
    /// (`--steady-seconds`; empty when 0), i.e. the provisioned machines' health checks.
    pub steady_seconds: f64,
    pub reconcile_steady: HashMap<String, Latency>,
    pub logs: String,
}

struct Watches {
    hosts: Store<SSHHost>,
    machines: Store<SSHMachine>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Watches {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn watch<K>(api: Api<K>) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default())).applied_objects();
    let task = tokio::spawn(async move {
        futures::pin_mut!(stream);
        while stream.next().await.is_some() {}
    });
    (reader, task)
}

/// Polls the harness's own watch cache (no API requests) until `done`, or fails after `timeout`.
async fn until<K>(store: &Store<K>, timeout: Duration, what: &str, mut done: impl FnMut(&[std::sync::Arc<K>]) -> bool) -> anyhow::Result<()>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    let deadline = Instant::now() + timeout;
    loop {
        if done(&store.state()) {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn available(h: &SSHHost) -> bool {
    h.spec.consumer_ref.is_none() && h.status.as_ref().and_then(|s| s.phase) == Some(HostPhase::Available)
}

fn provisioned(m: &SSHMachine) -> bool {
    m.status.as_ref().and_then(|s| s.initialization.as_ref()).and_then(|i| i.provisioned) == Some(true)
}

struct Manager {
    daemon: Daemon,
    metrics_port: u16,
}

impl Manager {
    fn sample(&self) -> ProcSample {
        procfs::sample(self.daemon.pid()).unwrap_or_default()
    }
    fn scrape(&self) -> Scrape {
        observe::parse_metrics(&http_get(self.metrics_port, "/metrics").unwrap_or_default())
    }
}

/// A fresh API server with capssh's CRDs and the manager running against it, on `farm`'s first
/// `n` hosts, and the harness's watches: what each capssh run starts from.
pub(super) struct Stand<'a> {
    farm: &'a HostFarm,
    n: usize,
    timeout: Duration,
    audit: std::path::PathBuf,
    client: kube::Client,
    watches: Watches,
    manager: Manager,
    plane: ManagementPlane,
}

/// A provisioning phase's numbers.
pub(super) struct Provisioned {
    pub phase: Phase,
    pub create_seconds: f64,
    pub machine_seconds: (f64, f64, f64),
    pub reconcile: HashMap<String, Latency>,
}

impl<'a> Stand<'a> {
    /// `suite` names the artifacts folder (logs, audit log).
    pub(super) async fn start(suite: &str, farm: &'a HostFarm, n: usize, limit: usize, timeout: Duration) -> anyhow::Result<Stand<'a>> {
        let dir = artifacts_dir(suite);
        let policy = dir.join("audit-policy.yaml");
        let audit = dir.join("audit.log");
        std::fs::write(&policy, observe::audit_policy())?;
        let plane = ManagementPlane::start_with(suite, &observe::audit_args(&policy, &audit)).await?;
        let client = plane.client().await?;
        install_crds(&client).await?;
        install_capssh_crds(&client).await?;
        scenario::namespace(&client, NS).await?;
        scenario::farm_key_secret(&client, NS, farm).await?;
        scenario::provisioned_cluster(&client, NS, CLUSTER).await?;

        let kubeconfig = plane.kubeconfig_for(observe::MANAGER_USER, Some("system:masters"))?;
        let metrics_port = free_port();
        // BENCH_MANAGER_WRAP="heaptrack -o FILE" (or any command prefix) runs the manager under a profiler.
        let wrap: Vec<String> = std::env::var("BENCH_MANAGER_WRAP").unwrap_or_default().split_whitespace().map(String::from).collect();
        let mut cmd = match wrap.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(capssh());
                cmd
            }
            None => Command::new(capssh()),
        };
        cmd.args(["manager", "--webhook-addr", ""])
            .args(["--health-addr", &format!("127.0.0.1:{}", free_port())])
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
            .args(["--max-concurrent-hosts", &limit.to_string()])
            // The test hosts share two cores: 1,000 resets at once take longer than the default
            // 5 minutes, after which a host is quarantined (real hosts each have their own CPU).
            .args(["--cleanup-give-up-seconds", &CLEANUP_GIVE_UP_SECONDS.to_string()])
            .env("KUBECONFIG", &kubeconfig)
            // The manager's default; BENCH_MANAGER_LOG=capssh=debug to see every reconcile.
            .env("RUST_LOG", std::env::var("BENCH_MANAGER_LOG").unwrap_or_else(|_| "info".into()));
        let manager = Manager { daemon: Daemon::start("capssh-manager", cmd, &plane.dir.join("capssh-manager.log"))?, metrics_port };

        let (host_store, host_task) = watch(Api::<SSHHost>::namespaced(client.clone(), NS));
        let (machine_store, machine_task) = watch(Api::<SSHMachine>::namespaced(client.clone(), NS));
        let watches = Watches { hosts: host_store, machines: machine_store, tasks: vec![host_task, machine_task] };
        Ok(Stand { farm, n, timeout, audit, client, watches, manager, plane })
    }

    pub(super) fn logs(&self) -> String {
        self.plane.dir.display().to_string()
    }

    pub(super) fn manager(&self) -> ProcSample {
        self.manager.sample()
    }

    fn costs(&self) -> Costs {
        Costs::now(&self.manager, &self.plane, self.farm, self.n)
    }

    /// Registers the `n` hosts; done when the manager has probed every one Available.
    pub(super) async fn register_hosts(&self) -> anyhow::Result<Phase> {
        let (offset, costs) = (observe::audit_offset(&self.audit), self.costs());
        let started = Instant::now();
        let hosts: Api<SSHHost> = Api::namespaced(self.client.clone(), NS);
        futures::stream::iter(self.farm.hosts.iter().take(self.n))
            .map(|host| {
                let hosts = hosts.clone();
                async move {
                    let doc: SSHHost = serde_json::from_value(json!({
                        "apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "SSHHost",
                        "metadata": {"name": host.name, "namespace": NS, "labels": {"role": "worker"}},
                        "spec": {"address": host.address.to_string(), "auth": {"privateKeySecretRef": {"name": "farm-key"}},
                                 "hostKey": {"publicKeys": [host.host_key_public]}}
                    }))?;
                    hosts.create(&PostParams::default(), &doc).await?;
                    anyhow::Ok(())
                }
            })
            .buffer_unordered(CREATE_CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await?;
        let n = self.n;
        until(&self.watches.hosts, self.timeout, "every host Available", |hs| hs.len() == n && hs.iter().all(|h| available(h))).await?;
        let phase = phase(started, costs, self.costs(), &self.audit, offset)?;
        // Let the last status writes' watch events settle before an idle reading.
        tokio::time::sleep(Duration::from_secs(2)).await;
        Ok(phase)
    }

    /// Creates the machines `names`, as Cluster API would with the bootstrap data ready; done
    /// when every one is provisioned (or fails after the timeout, saying what they wait for).
    pub(super) async fn provision(&self, names: &[String], data: &str) -> anyhow::Result<Provisioned> {
        let (offset, costs) = (observe::audit_offset(&self.audit), self.costs());
        let before = self.manager.scrape();
        let started = Instant::now();
        let created = create_all(names, |name| {
            let client = self.client.clone();
            async move { create_machine(&client, &name, data).await }
        })
        .await?;
        let create_seconds = started.elapsed().as_secs_f64();
        let mut seen: HashMap<String, Instant> = HashMap::new();
        until(&self.watches.machines, self.timeout, "every machine provisioned", |ms| {
            for m in ms.iter().filter(|m| provisioned(m)) {
                seen.entry(m.metadata.name.clone().unwrap_or_default()).or_insert_with(Instant::now);
            }
            seen.len() == names.len()
        })
        .await
        .map_err(|err| anyhow::anyhow!("{err}; {}", stuck(&self.watches.machines.state())))?;
        let phase = phase(started, costs, self.costs(), &self.audit, offset)?;
        let after = self.manager.scrape();
        let reconcile = ["SSHMachine", "SSHHost"].iter().map(|k| (k.to_string(), observe::latency(&before, &after, k))).collect();
        Ok(Provisioned { phase, create_seconds, machine_seconds: machine_seconds(&created, &seen), reconcile })
    }

    /// The reconciles of the next `window`, with nothing created or deleted: the API server is
    /// not busy with a burst, so the time outside SSH is the manager's own and its requests'.
    pub(super) async fn steady(&self, window: Duration) -> HashMap<String, Latency> {
        let before = self.manager.scrape();
        tokio::time::sleep(window).await;
        let after = self.manager.scrape();
        ["SSHMachine", "SSHHost"].iter().map(|k| (k.to_string(), observe::latency(&before, &after, k))).collect()
    }

    /// Deletes the machines `names`; done when every SSHMachine is gone and all `n` hosts are
    /// reset, released and Available again. Also returns the HostReleased reasons seen (how
    /// many machines each) and the reconcile latencies.
    pub(super) async fn delete(&self, names: &[String]) -> anyhow::Result<(Phase, BTreeMap<String, usize>, HashMap<String, Latency>)> {
        let (offset, costs) = (observe::audit_offset(&self.audit), self.costs());
        let before = self.manager.scrape();
        let started = Instant::now();
        let machines: Api<SSHMachine> = Api::namespaced(self.client.clone(), NS);
        let machine_api = Api::<DynamicObject>::namespaced_with(self.client.clone(), NS, &capssh::controllers::capi::machine_resource());
        futures::stream::iter(names)
            .map(|name| {
                let (machines, machine_api) = (machines.clone(), machine_api.clone());
                async move {
                    machines.delete(name, &DeleteParams::default()).await?;
                    machine_api.delete(name, &DeleteParams::default()).await?;
                    anyhow::Ok(())
                }
            })
            .buffer_unordered(CREATE_CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await?;
        let mut waits: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        until(&self.watches.machines, self.timeout, "every SSHMachine gone", |ms| {
            for m in ms {
                let released = m.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.r#type == "HostReleased"));
                if let Some(c) = released {
                    let message: String = c.message.chars().take(240).collect();
                    waits.entry(format!("{}: {message}", c.reason)).or_default().insert(m.metadata.name.clone().unwrap_or_default());
                }
            }
            ms.is_empty()
        })
        .await?;
        let n = self.n;
        until(&self.watches.hosts, self.timeout, "every host Available again", |hs| hs.len() == n && hs.iter().all(|h| available(h)))
            .await
            .map_err(|err| anyhow::anyhow!("{err}; {}", hosts_not_available(&self.watches.hosts.state())))?;
        let phase = phase(started, costs, self.costs(), &self.audit, offset)?;
        let after = self.manager.scrape();
        let reconcile = ["SSHMachine", "SSHHost"].iter().map(|k| (k.to_string(), observe::latency(&before, &after, k))).collect();
        Ok((phase, waits.into_iter().map(|(k, v)| (k, v.len())).collect(), reconcile))
    }
}

/// The machine names of a run: `m0000`, `m0001`, ...
pub(super) fn machine_names(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("m{i:04}")).collect()
}

/// Runs capssh on the first `n` hosts of `farm` with bootstrap data `data`.
pub async fn run(farm: &HostFarm, n: usize, data: &str, limit: usize, timeout: Duration, steady: Duration) -> anyhow::Result<CapsshRun> {
    let stand = Stand::start(&format!("bench-capssh-{n}"), farm, n, limit, timeout).await?;
    let mut run = CapsshRun { max_concurrent_hosts: limit, logs: stand.logs(), ..Default::default() };
    // Phase 1: register the hosts; the manager probes each into Available.
    run.hosts_ready = stand.register_hosts().await?;
    run.manager_idle = stand.manager();
    // Phase 2: the machines, as Cluster API would create them, with the bootstrap data ready.
    let names = machine_names(n);
    let p = stand.provision(&names, data).await?;
    (run.provision, run.create_seconds, run.reconcile_provision) = (p.phase, p.create_seconds, p.reconcile);
    (run.machine_p50_seconds, run.machine_p90_seconds, run.machine_max_seconds) = p.machine_seconds;
    run.manager_after_provision = stand.manager();
    if !steady.is_zero() {
        run.steady_seconds = steady.as_secs_f64();
        run.reconcile_steady = stand.steady(steady).await;
    }
    // Phase 3: delete them all; every host is reset, verified, released and probed Available.
    match stand.delete(&names).await {
        Ok(deleted) => (run.delete, run.delete_waits, run.reconcile_delete) = deleted,
        Err(err) => run.delete_error = Some(format!("{err:#}")),
    }
    run.manager_end = stand.manager();
    Ok(run)
}

/// CPU counters at a phase boundary: the manager, kube-apiserver, etcd, the hosts' sshd.
#[derive(Clone, Copy)]
struct Costs([f64; 4]);

impl Costs {
    fn now(manager: &Manager, plane: &ManagementPlane, farm: &HostFarm, n: usize) -> Self {
        let (apiserver, etcd) = plane.pids();
        let cpu = |pid| procfs::sample(pid).map(|s| s.cpu_seconds).unwrap_or(0.0);
        Costs([manager.sample().cpu_seconds, cpu(apiserver), cpu(etcd), procfs::hosts_sshd_cpu(farm, n)])
    }
}

fn phase(started: Instant, before: Costs, after: Costs, audit: &std::path::Path, offset: u64) -> anyhow::Result<Phase> {
    let d = |i: usize| after.0[i] - before.0[i];
    Ok(Phase {
        wall_seconds: started.elapsed().as_secs_f64(),
        cpu_seconds: d(0),
        apiserver_cpu_seconds: d(1),
        etcd_cpu_seconds: d(2),
        hosts_sshd_cpu_seconds: d(3),
        requests: observe::count_requests(audit, offset, observe::audit_offset(audit))?,
    })
}

/// What the machines not provisioned are waiting for, by Ready reason (for a timeout's message).
fn stuck(machines: &[std::sync::Arc<SSHMachine>]) -> String {
    let mut reasons: std::collections::BTreeMap<String, usize> = Default::default();
    for m in machines.iter().filter(|m| !provisioned(m)) {
        let reason = m
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.r#type == "Ready"))
            .map(|c| format!("{}: {}", c.reason, c.message))
            .unwrap_or_else(|| "no status".into());
        *reasons.entry(reason).or_default() += 1;
    }
    format!("{} machines not provisioned: {reasons:?}", reasons.values().sum::<usize>())
}

/// The hosts not (yet) Available, by phase (for a timeout's message).
fn hosts_not_available(hosts: &[std::sync::Arc<SSHHost>]) -> String {
    let mut phases: BTreeMap<String, usize> = BTreeMap::new();
    for h in hosts.iter().filter(|h| !available(h)) {
        let phase = h.status.as_ref().and_then(|s| s.phase).map(|p| format!("{p:?}")).unwrap_or_else(|| "no status".into());
        let claimed = if h.spec.consumer_ref.is_some() { ", claimed" } else { "" };
        *phases.entry(format!("{phase}{claimed}")).or_default() += 1;
    }
    format!("{} hosts not Available: {phases:?}", phases.values().sum::<usize>())
}

/// The bootstrap Secret, the Machine pointing at it, and the SSHMachine owned by the Machine.
async fn create_machine(client: &kube::Client, name: &str, data: &str) -> anyhow::Result<()> {
    crate::bench::create_bootstrap_secret(client, NS, CLUSTER, name, data).await?;
    let labels = json!({"cluster.x-k8s.io/cluster-name": CLUSTER});
    let resource = capssh::controllers::capi::machine_resource();
    let machine: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
        "metadata": {"name": name, "labels": labels},
        "spec": {"clusterName": CLUSTER, "bootstrap": {"dataSecretName": format!("{name}-bootstrap")},
                 "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "SSHMachine", "name": name}}
    }))?;
    let owner = Api::<DynamicObject>::namespaced_with(client.clone(), NS, &resource).create(&PostParams::default(), &machine).await?;
    let sshmachine: SSHMachine = serde_json::from_value(json!({
        "apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "SSHMachine",
        "metadata": {"name": name, "labels": labels,
                     "ownerReferences": [{"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine", "name": name, "uid": owner.metadata.uid}]},
        "spec": {}
    }))?;
    Api::<SSHMachine>::namespaced(client.clone(), NS).create(&PostParams::default(), &sshmachine).await?;
    Ok(())
}
