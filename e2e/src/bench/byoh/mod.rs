//! The peer that runs: BYOH (Bring Your Own Host, github.com/vmware-tanzu/cluster-api-provider-
//! bringyourownhost v0.5.0) on the same farm hosts as capssh, right after capssh at each size.
//!
//! BYOH is a pull model: an agent on every host registers it (a ByoHost) and runs the bootstrap
//! data of the machine that claims it; the manager pairs ByoMachines with free ByoHosts. Here:
//! a second management plane (BYOH speaks only Cluster API v1beta1: [`setup::store_v1beta1`])
//! listening where the hosts reach it; the manager under its own identity; one agent per host in
//! the host's namespaces ([`agents`]). Phases, as capssh's: agents started → every ByoHost
//! registered; N Machines → every machine provisioned (ByoMachine ready and its host's bootstrap
//! succeeded); ByoMachines then Machines deleted → every host free. Cluster API's controllers do
//! not run: the harness creates what they would (as for capssh).

pub mod agents;
pub mod analysis;
pub mod setup;

use super::observe::{self, Latency, Scrape};
use super::procfs::{self, ProcSample};
use super::{CREATE_CONCURRENCY, create_all, machine_seconds};
use crate::hosts::HostFarm;
use crate::manager::http_get;
use crate::mgmt::ManagementPlane;
use crate::process::Daemon;
use crate::scenario;
use crate::tools::{artifacts_dir, free_port};
use agents::{Agents, DefaultRoutes};
use analysis::{AgentsSample, Claim, HostView, Pairing, RequestsByWho};
use anyhow::Context as _;
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, DeleteParams, DynamicObject};
use kube::runtime::{WatchStreamExt, watcher};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const NS: &str = "bench";
pub const CLUSTER: &str = "bench";
/// The Machines' `spec.version` (the Kubernetes the repository pins; with --skip-installation
/// the agent only copies it into an annotation).
pub const KUBERNETES_VERSION: &str = "v1.36.3";
pub const VERSION: &str = "v0.5.0";
/// How many objects the harness creates or deletes at once (as for capssh).
/// BYOH's manager serves its (unused) webhooks here on every address; the port is not a flag.
const WEBHOOK_PORT: u16 = 9443;

/// One phase: its wall time, what each party spent in it, and the API requests by identity.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ByohPhase {
    pub wall_seconds: f64,
    pub manager_cpu_seconds: f64,
    /// The agents and the commands they ran.
    pub agents_cpu_seconds: f64,
    /// Every process in the hosts' network namespaces (agents, their commands, the idle sshd).
    pub hosts_cpu_seconds: f64,
    pub apiserver_cpu_seconds: f64,
    pub etcd_cpu_seconds: f64,
    pub requests: RequestsByWho,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ByohRun {
    pub version: &'static str,
    /// Agents started → every ByoHost registered and its agent's controller running.
    pub registered: ByohPhase,
    /// Machines created → every machine provisioned: the number compared with capssh's.
    pub provision: ByohPhase,
    pub create_seconds: f64,
    /// Per machine, from its objects created to provisioned seen.
    pub machine_p50_seconds: f64,
    pub machine_p90_seconds: f64,
    pub machine_max_seconds: f64,
    /// ByoMachines deleted → every host free again (Machines deleted once their ByoMachines are gone).
    pub delete: ByohPhase,
    pub byomachines_gone_seconds: f64,
    pub manager_idle: ProcSample,
    pub manager_after_provision: ProcSample,
    pub manager_end: ProcSample,
    pub agents_idle: AgentsSample,
    pub agents_after_provision: AgentsSample,
    pub agents_end: AgentsSample,
    /// From the manager's controller-runtime metrics, by controller (byomachine, ...).
    pub reconcile_provision: HashMap<String, Latency>,
    pub reconcile_delete: HashMap<String, Latency>,
    /// Hosts and machines at the end of provisioning, and every claim change seen until then.
    pub pairing: Pairing,
    /// After the release: what BYOH's agent leaves on a host (with --skip-installation it runs
    /// no reset; it removes the sentinel file only).
    pub hosts_with_sentinel_after_release: usize,
    pub hosts_with_bootstrap_files_after_release: usize,
    /// Whether this machine forwards IPv4 (the hosts' default route leads no further when not).
    pub root_forwarding: bool,
    pub logs: String,
}

struct Manager {
    daemon: Daemon,
    metrics_port: u16,
    log: PathBuf,
}

impl Manager {
    /// The manager under its own identity, metrics on a free loopback port, its webhook
    /// certificate in `$TMPDIR/k8s-webhook-server/serving-certs` (it will not start without one,
    /// though no webhook configuration points at it), the CSR approver off.
    fn start(plane: &ManagementPlane, binary: &Path) -> anyhow::Result<Self> {
        std::net::TcpListener::bind(("0.0.0.0", WEBHOOK_PORT))
            .with_context(|| format!("BYOH's manager needs port {WEBHOOK_PORT} (hard-coded) and it is taken"))?;
        let tmp = plane.dir.join("byoh-tmp");
        let certs = tmp.join("k8s-webhook-server/serving-certs");
        std::fs::create_dir_all(&certs)?;
        plane.ca.server("byoh-webhook", &[])?.write(&certs, "tls")?;
        let kubeconfig = plane.kubeconfig_for(analysis::MANAGER_USER, Some("system:masters"))?;
        let metrics_port = free_port();
        let mut cmd = Command::new(binary);
        cmd.arg(format!("--metrics-addr=127.0.0.1:{metrics_port}"))
            .arg(format!("--health-probe-bind-address=127.0.0.1:{}", free_port()))
            .env("KUBECONFIG", &kubeconfig)
            .env("TMPDIR", &tmp)
            .env("MANUAL_CSR_APPROVAL", "enable");
        let log = plane.dir.join("byoh-manager.log");
        Ok(Self { daemon: Daemon::start("byoh-manager", cmd, &log)?, metrics_port, log })
    }

    fn sample(&self) -> ProcSample {
        procfs::sample(self.daemon.pid()).unwrap_or_default()
    }

    fn scrape(&self) -> Scrape {
        observe::parse_controller_runtime_metrics(&http_get(self.metrics_port, "/metrics").unwrap_or_default())
    }

    fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.daemon.exit_status() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            anyhow::bail!("BYOH's manager exited ({status}): {}", lines[lines.len().saturating_sub(30)..].join("\n"));
        }
        Ok(())
    }

    /// Until its metrics answer (it has started its runnables by then).
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !http_get(self.metrics_port, "/metrics").is_ok_and(|body| !body.is_empty()) {
            self.check_running()?;
            anyhow::ensure!(Instant::now() < deadline, "BYOH's manager serves no metrics after 60s; log {}", self.log.display());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }
}

/// A live copy of one kind's objects (by name), kept by a watch; `on_apply` sees every version.
struct Mirror {
    objects: Arc<Mutex<BTreeMap<String, DynamicObject>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Mirror {
    fn start(api: Api<DynamicObject>, mut on_apply: impl FnMut(&DynamicObject) + Send + 'static) -> Self {
        let objects: Arc<Mutex<BTreeMap<String, DynamicObject>>> = Arc::default();
        let shared = objects.clone();
        let task = tokio::spawn(async move {
            let stream = watcher(api, watcher::Config::default()).default_backoff();
            futures::pin_mut!(stream);
            let mut listing = BTreeMap::new();
            while let Some(event) = stream.next().await {
                let Ok(event) = event else { continue };
                let name = |o: &DynamicObject| o.metadata.name.clone().unwrap_or_default();
                match event {
                    watcher::Event::Init => listing.clear(),
                    watcher::Event::InitApply(o) => {
                        on_apply(&o);
                        listing.insert(name(&o), o);
                    }
                    watcher::Event::InitDone => *shared.lock().expect("mirror") = std::mem::take(&mut listing),
                    watcher::Event::Apply(o) => {
                        on_apply(&o);
                        shared.lock().expect("mirror").insert(name(&o), o);
                    }
                    watcher::Event::Delete(o) => {
                        shared.lock().expect("mirror").remove(&name(&o));
                    }
                }
            }
        });
        Self { objects, task }
    }

    fn snapshot(&self) -> Vec<DynamicObject> {
        self.objects.lock().expect("mirror").values().cloned().collect()
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn host_view(o: &DynamicObject) -> HostView {
    let text = |pointer: &str| o.data.pointer(pointer).and_then(|v| v.as_str()).map(String::from);
    let labels = o.metadata.labels.clone().unwrap_or_default();
    let bootstrapped = o
        .data
        .pointer("/status/conditions")
        .and_then(|c| c.as_array())
        .and_then(|conditions| conditions.iter().find(|c| c["type"] == "K8sNodeBootstrapSucceeded").map(|c| c["status"] == "True"));
    HostView {
        name: o.metadata.name.clone().unwrap_or_default(),
        registered: text("/status/hostinfo/osname").is_some_and(|s| !s.is_empty()),
        machine_ref: text("/status/machineRef/name"),
        attached_label: labels.get("byoh.infrastructure.cluster.x-k8s.io/byomachine-name").cloned(),
        cluster_label: labels.contains_key("cluster.x-k8s.io/cluster-name"),
        bootstrapped,
    }
}

fn ready_machines(machines: &[DynamicObject]) -> BTreeSet<String> {
    machines.iter().filter(|m| m.data.pointer("/status/ready") == Some(&serde_json::json!(true))).filter_map(|m| m.metadata.name.clone()).collect()
}

/// What the machines not provisioned wait for, by their BYOHostReady reason (for a timeout).
fn stuck(machines: &[DynamicObject], hosts: &[HostView]) -> String {
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for m in machines.iter().filter(|m| m.data.pointer("/status/ready") != Some(&serde_json::json!(true))) {
        let conditions = m.data.pointer("/status/conditions").and_then(|c| c.as_array()).cloned().unwrap_or_default();
        let reason =
            conditions.iter().find(|c| c["type"] == "BYOHostReady").map(|c| format!("{}", c["reason"])).unwrap_or_else(|| "no condition".into());
        *reasons.entry(reason).or_default() += 1;
    }
    let bootstrapped = hosts.iter().filter(|h| h.bootstrapped == Some(true)).count();
    format!("ByoMachines not ready by BYOHostReady reason: {reasons:?}; hosts bootstrapped: {bootstrapped}")
}

/// CPU counters at a phase boundary: manager, agents, hosts, kube-apiserver, etcd.
#[derive(Clone, Copy)]
struct Costs([f64; 5]);

impl Costs {
    fn now(manager: &Manager, agents: Option<&Agents>, plane: &ManagementPlane, farm: &HostFarm, n: usize) -> Self {
        let (apiserver, etcd) = plane.pids();
        let cpu = |pid| procfs::sample(pid).map(|s| s.cpu_seconds).unwrap_or(0.0);
        let agents = agents.map(Agents::cpu_seconds).unwrap_or(0.0);
        Costs([manager.sample().cpu_seconds, agents, procfs::hosts_sshd_cpu(farm, n), cpu(apiserver), cpu(etcd)])
    }
}

fn phase(started: Instant, before: Costs, after: Costs, audit: &Path, from: u64) -> anyhow::Result<ByohPhase> {
    let d = |i: usize| after.0[i] - before.0[i];
    let log = std::fs::read(audit).with_context(|| format!("reading {}", audit.display()))?;
    let to = observe::audit_offset(audit) as usize;
    let slice = &log[(from as usize).min(log.len())..to.min(log.len())];
    Ok(ByohPhase {
        wall_seconds: started.elapsed().as_secs_f64(),
        manager_cpu_seconds: d(0),
        agents_cpu_seconds: d(1),
        hosts_cpu_seconds: d(2),
        apiserver_cpu_seconds: d(3),
        etcd_cpu_seconds: d(4),
        requests: analysis::requests_by_who(slice),
    })
}

/// Polls `done` every 50 ms (the harness's own watches: no API requests), failing early if the
/// manager or an agent exited, or after `timeout` with `why()`.
async fn until(
    what: &str,
    timeout: Duration,
    manager: &mut Manager,
    agents: &mut Agents,
    mut done: impl FnMut() -> bool,
    why: impl Fn() -> String,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut checked = Instant::now();
    while !done() {
        if checked.elapsed() > Duration::from_secs(1) {
            manager.check_running()?;
            agents.check_running()?;
            checked = Instant::now();
        }
        anyhow::ensure!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}: {}", why());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn latencies(before: &Scrape, after: &Scrape) -> HashMap<String, Latency> {
    ["byomachine", "byohost", "byocluster"].iter().map(|c| (c.to_string(), observe::latency(before, after, c))).collect()
}

/// Runs BYOH on the first `n` hosts of `farm` with bootstrap data `data`.
pub async fn run(farm: &HostFarm, n: usize, data: &str, timeout: Duration, manager_binary: &Path, agent_binary: &Path) -> anyhow::Result<ByohRun> {
    let suite = format!("bench-byoh-{n}");
    let dir = artifacts_dir(&suite);
    let policy = dir.join("audit-policy.yaml");
    let audit = dir.join("audit.log");
    std::fs::write(&policy, analysis::audit_policy())?;
    let mut apiserver_args = observe::audit_args(&policy, &audit);
    // The agents connect from the hosts' namespaces (to their root-side addresses); the last
    // --bind-address wins over the plane's 127.0.0.1.
    apiserver_args.push("--bind-address=0.0.0.0".into());
    let plane = ManagementPlane::start_with(&suite, &apiserver_args).await?;
    let client = plane.client().await?;
    scenario::namespace(&client, NS).await?;
    setup::install(&client).await?;
    setup::cluster(&client, &plane, n).await?;
    let mut manager = Manager::start(&plane, manager_binary)?;
    manager.wait_ready().await?;
    let routes = DefaultRoutes::add(farm, n)?;

    let history: Arc<Mutex<BTreeMap<String, Vec<Claim>>>> = Arc::default();
    let hosts = {
        let history = history.clone();
        Mirror::start(Api::namespaced_with(client.clone(), NS, &setup::byohost_resource()), move |o| {
            let view = host_view(o);
            let claim = Claim { machine: view.machine_ref.clone(), bootstrapped: view.bootstrapped };
            analysis::record_claim(&mut history.lock().expect("history"), &view.name, claim);
        })
    };
    let byomachine_api: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &setup::byomachine_resource());
    let machines = Mirror::start(byomachine_api.clone(), |_| {});
    let views = || hosts.snapshot().iter().map(host_view).collect::<Vec<_>>();
    let mut run = ByohRun { version: VERSION, root_forwarding: agents::forwarding(), logs: plane.dir.display().to_string(), ..Default::default() };

    // Phase 1: the agents start and register their hosts.
    agents::write_kubeconfigs(farm, n, &plane)?;
    let (mut offset, mut costs) = (observe::audit_offset(&audit), Costs::now(&manager, None, &plane, farm, n));
    let started = Instant::now();
    let mut agents = Agents::start(farm, n, agent_binary, &plane.dir.join("agents"))?;
    let registered = |vs: &[HostView]| vs.iter().filter(|h| h.ready()).count();
    until(
        "every ByoHost registered",
        timeout,
        &mut manager,
        &mut agents,
        || registered(&views()) == n,
        || format!("{} of {n} registered", registered(&views())),
    )
    .await?;
    run.registered = phase(started, costs, Costs::now(&manager, Some(&agents), &plane, farm, n), &audit, offset)?;
    // Let the last status writes' watch events settle before the idle reading.
    tokio::time::sleep(Duration::from_secs(2)).await;
    (run.manager_idle, run.agents_idle) = (manager.sample(), agents.sample());

    // Phase 2: the machines, as Cluster API would create them, with the bootstrap data ready.
    (offset, costs) = (observe::audit_offset(&audit), Costs::now(&manager, Some(&agents), &plane, farm, n));
    let before = manager.scrape();
    let started = Instant::now();
    let names: Vec<String> = (0..n).map(|i| format!("m{i:04}")).collect();
    let created = create_all(&names, |name| {
        let client = client.clone();
        async move { setup::create_machine(&client, &name, data).await.with_context(|| format!("creating machine {name}")) }
    })
    .await?;
    run.create_seconds = started.elapsed().as_secs_f64();
    let mut seen: HashMap<String, Instant> = HashMap::new();
    let done = || {
        for m in analysis::provisioned(&ready_machines(&machines.snapshot()), &views()) {
            seen.entry(m).or_insert_with(Instant::now);
        }
        seen.len() == n
    };
    until("every machine provisioned", timeout, &mut manager, &mut agents, done, || {
        let pairing = analysis::check_pairing(NS, &names, &views(), &history.lock().expect("history"));
        format!("{}; pairing so far: {pairing:?}", stuck(&machines.snapshot(), &views()))
    })
    .await?;
    run.provision = phase(started, costs, Costs::now(&manager, Some(&agents), &plane, farm, n), &audit, offset)?;
    run.reconcile_provision = latencies(&before, &manager.scrape());
    (run.manager_after_provision, run.agents_after_provision) = (manager.sample(), agents.sample());
    (run.machine_p50_seconds, run.machine_p90_seconds, run.machine_max_seconds) = machine_seconds(&created, &seen);
    run.pairing = analysis::check_pairing(NS, &names, &views(), &history.lock().expect("history"));

    // Phase 3: ByoMachines first (BYOH releases a host only while the ByoMachine's Machine
    // exists), then the Machines; every agent releases its host.
    (offset, costs) = (observe::audit_offset(&audit), Costs::now(&manager, Some(&agents), &plane, farm, n));
    let before = manager.scrape();
    let started = Instant::now();
    delete_all(&byomachine_api, &names).await?;
    until("every ByoMachine gone", timeout, &mut manager, &mut agents, || machines.snapshot().is_empty(), || stuck(&machines.snapshot(), &views()))
        .await?;
    run.byomachines_gone_seconds = started.elapsed().as_secs_f64();
    delete_all(&Api::namespaced_with(client.clone(), NS, &setup::machine_resource()), &names).await?;
    let free = |vs: &[HostView]| vs.iter().filter(|h| h.free()).count();
    until("every host free again", timeout, &mut manager, &mut agents, || free(&views()) == n, || format!("{} of {n} free", free(&views()))).await?;
    run.delete = phase(started, costs, Costs::now(&manager, Some(&agents), &plane, farm, n), &audit, offset)?;
    run.reconcile_delete = latencies(&before, &manager.scrape());
    (run.manager_end, run.agents_end) = (manager.sample(), agents.sample());
    for i in 0..n {
        let on_host = |path: &str| farm.exec(i, &format!("test -e {path}")).is_ok_and(|out| out.status.success());
        run.hosts_with_sentinel_after_release += usize::from(on_host(capssh::bootstrap::SENTINEL));
        run.hosts_with_bootstrap_files_after_release += usize::from(on_host("/etc/kubernetes/bench"));
    }
    // Agents first (they would retry against a plane that is going away), then their routes.
    drop(agents);
    drop(routes);
    drop((hosts, machines));
    drop(manager);
    drop(plane);
    Ok(run)
}

async fn delete_all(api: &Api<DynamicObject>, names: &[String]) -> anyhow::Result<()> {
    futures::stream::iter(names)
        .map(|name| async move { api.delete(name, &DeleteParams::default()).await.with_context(|| format!("deleting {name}")) })
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_byohost_as_the_harness_reads_it() {
        let host: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1", "kind": "ByoHost",
            "metadata": {"name": "h7", "labels": {"cluster.x-k8s.io/cluster-name": "bench",
                                                   "byoh.infrastructure.cluster.x-k8s.io/byomachine-name": "bench.m0003"}},
            "status": {"hostinfo": {"osname": "linux"}, "machineRef": {"kind": "ByoMachine", "name": "m0003"},
                       "conditions": [{"type": "K8sNodeBootstrapSucceeded", "status": "True"}]}
        }))
        .unwrap();
        let view = host_view(&host);
        assert_eq!(view.machine_ref.as_deref(), Some("m0003"));
        assert_eq!(view.attached_label.as_deref(), Some("bench.m0003"));
        assert!(view.ready() && view.cluster_label && !view.free() && view.bootstrapped == Some(true), "{view:?}");
        let fresh: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1", "kind": "ByoHost", "metadata": {"name": "h8"}, "status": {}
        }))
        .unwrap();
        let view = host_view(&fresh);
        assert!(!view.ready() && view.free() && view.bootstrapped.is_none(), "{view:?}");
        let machine: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1", "kind": "ByoMachine", "metadata": {"name": "m0003"}, "status": {"ready": true}
        }))
        .unwrap();
        assert_eq!(ready_machines(&[machine, fresh]), ["m0003".to_string()].into_iter().collect());
    }
}
