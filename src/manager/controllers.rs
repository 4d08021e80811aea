//! Wiring the controllers: what each watches, and which changes of other kinds wake it.

use crate::api::v1alpha1::{SSHCluster, SSHHost, SSHMachine};
use crate::controllers::caches::{self, reflected};
use crate::controllers::{Context, capi, sshcluster, sshhost};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::Resource;
use kube::api::{Api, DynamicObject};
use kube::runtime::reflector::{ObjectRef, store::Writer};
use kube::runtime::{Controller, controller, watcher};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs `reconcile`, recording its count, result, duration and the part of it spent outside
/// SSH under `kind`.
macro_rules! measured {
    ($kind:expr, $reconcile:path) => {
        |obj, ctx: Arc<Context>| async move {
            let started = Instant::now();
            let (result, on_hosts) = crate::ssh::accounted($reconcile(obj, ctx.clone())).await;
            ctx.metrics.observe_reconcile($kind, started, on_hosts, result.is_ok());
            result
        }
    };
}

/// What the manager watches: one namespace or all, and optionally only labelled objects; how
/// many reconciles of one kind run at once.
#[derive(Clone, Debug)]
pub struct Scope {
    pub namespace: Option<String>,
    pub watch_filter: Option<String>,
    pub concurrency: Concurrency,
}

/// Reconciles of each kind at once. Each one in flight holds its API requests' buffers (and a
/// connection of its own: the client speaks HTTP/1.1), so the bound is what keeps a burst of
/// N objects from costing N of them.
#[derive(Clone, Copy, Debug)]
pub struct Concurrency {
    pub sshmachine: u16,
    pub sshhost: u16,
    pub sshcluster: u16,
}

fn limited(concurrency: u16) -> controller::Config {
    controller::Config::default().concurrency(concurrency.max(1))
}

impl Scope {
    fn config(&self) -> watcher::Config {
        match &self.watch_filter {
            Some(value) => watcher::Config::default().labels(&format!("cluster.x-k8s.io/watch-filter={value}")),
            None => watcher::Config::default(),
        }
    }
}

fn api<K>(client: kube::Client, namespace: &Option<String>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    }
}

fn dynamic_api(client: kube::Client, namespace: &Option<String>, resource: &kube::core::ApiResource) -> Api<DynamicObject> {
    match namespace {
        Some(ns) => Api::namespaced_with(client, ns, resource),
        None => Api::all_with(client, resource),
    }
}

async fn drain<T, E: std::fmt::Display>(kind: &str, stream: impl futures::Stream<Item = Result<T, E>>) -> anyhow::Result<()> {
    stream
        .for_each(|result| async move {
            if let Err(err) = result {
                tracing::debug!(error = %err, kind, "controller");
            }
        })
        .await;
    anyhow::bail!("the {kind} controller stopped")
}

pub async fn run_hosts(client: kube::Client, scope: Scope, ctx: Arc<Context>) -> anyhow::Result<()> {
    use crate::api::v1alpha1::HostPhase;
    // A machine's phase change wakes the host it holds: the host's phase follows it.
    let machines = api::<SSHMachine>(client.clone(), &scope.namespace);
    let controller = Controller::new(api::<SSHHost>(client, &scope.namespace), scope.config())
        .with_config(limited(scope.concurrency.sshhost))
        .watches(machines, scope.config(), |machine: SSHMachine| {
            let namespace = machine.metadata.namespace.clone().unwrap_or_default();
            machine.spec.host_ref.map(|host| ObjectRef::<SSHHost>::new(&host.name).within(&namespace))
        });
    let store = controller.store();
    // The same cache is what an unplaced machine chooses from (see Context::host_cache).
    let _ = ctx.host_cache.set(store.clone());
    let gauges = ctx.clone();
    // Hosts by phase, counted from the controller's own cache.
    tokio::spawn(async move {
        const PHASES: [(HostPhase, &str); 7] = [
            (HostPhase::Available, "Available"),
            (HostPhase::Claimed, "Claimed"),
            (HostPhase::Provisioning, "Provisioning"),
            (HostPhase::Provisioned, "Provisioned"),
            (HostPhase::Releasing, "Releasing"),
            (HostPhase::Quarantined, "Quarantined"),
            (HostPhase::Unreachable, "Unreachable"),
        ];
        loop {
            let hosts = store.state();
            let counts: Vec<(&str, i64)> = PHASES
                .iter()
                .map(|(phase, name)| (*name, hosts.iter().filter(|h| h.status.as_ref().and_then(|s| s.phase) == Some(*phase)).count() as i64))
                .collect();
            gauges.metrics.set_hosts(&counts);
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    });
    let controller = controller.run(measured!("SSHHost", sshhost::reconcile), sshhost::error_policy, ctx);
    drain("SSHHost", controller).await
}

pub async fn run_clusters(client: kube::Client, scope: Scope, ctx: Arc<Context>) -> anyhow::Result<()> {
    let namespace = &scope.namespace;
    let clusters = dynamic_api(client.clone(), namespace, &capi::cluster_resource());
    // A Cluster change (pause, endpoint) wakes the SSHCluster it points at.
    let controller = Controller::new(api::<SSHCluster>(client, namespace), scope.config()).with_config(limited(scope.concurrency.sshcluster));
    // The same cache is where a machine reads its cluster's failure-domain label.
    let _ = ctx.caches.ssh_clusters.set(controller.store());
    let controller = controller
        .watches_with(clusters, capi::cluster_resource(), scope.config(), |cluster: DynamicObject| {
            let infra = cluster.data.pointer("/spec/infrastructureRef").cloned();
            let namespace = cluster.metadata.namespace.clone().unwrap_or_default();
            infra
                .filter(|r| r.get("kind").and_then(|k| k.as_str()) == Some("SSHCluster"))
                .and_then(|r| r.get("name").and_then(|n| n.as_str()).map(str::to_string))
                .map(|name| ObjectRef::<SSHCluster>::new(&name).within(&namespace))
        })
        .run(measured!("SSHCluster", sshcluster::reconcile), sshcluster::error_policy, ctx);
    drain("SSHCluster", controller).await
}

pub async fn run_machines(client: kube::Client, scope: Scope, ctx: Arc<Context>) -> anyhow::Result<()> {
    let namespace = scope.namespace.clone();
    use crate::api::v1alpha1::MachinePhase;
    use crate::controllers::sshmachine;
    let controller =
        Controller::new(api::<SSHMachine>(client.clone(), &namespace), scope.config()).with_config(limited(scope.concurrency.sshmachine));
    let store = controller.store();
    // The same cache is where the SSHHost controller reads a claimed host's consumer.
    let _ = ctx.machine_cache.set(store.clone());
    let machines_of_cluster = store.clone();
    let machines_waiting = store.clone();
    // Clusters, Machines and bootstrap Secrets are cached by the streams that wake the
    // machines for them (see controllers::caches): the store has a change before its wake-up.
    let (machine_writer, cluster_writer) = (Writer::new(capi::machine_resource()), Writer::new(capi::cluster_resource()));
    let owners = machine_writer.as_reader();
    let _ = ctx.caches.machines.set(owners.clone());
    let _ = ctx.caches.clusters.set(cluster_writer.as_reader());
    let bootstrap_writer = Writer::<Secret>::default();
    let _ = ctx.caches.bootstrap_data.set(bootstrap_writer.as_reader());
    let machines = reflected(dynamic_api(client.clone(), &namespace, &capi::machine_resource()), scope.config(), machine_writer);
    let clusters = reflected(dynamic_api(client.clone(), &namespace, &capi::cluster_resource()), scope.config(), cluster_writer);
    // Not the watch filter: bootstrap providers do not copy that label to their Secrets.
    let bootstrap_secrets = reflected(api::<Secret>(client.clone(), &namespace), caches::bootstrap_data_selector(), bootstrap_writer);
    let controller = controller
        // A Machine (bootstrap data appearing, failure domain) wakes its SSHMachine.
        .watches_stream_with(machines, |machine: DynamicObject| infrastructure_of(&machine), capi::machine_resource())
        // Its bootstrap data (created, or corrected after it was refused) wakes it too.
        .watches_stream(bootstrap_secrets, move |secret: Secret| {
            let name = secret.metadata.name.clone();
            let namespace = secret.metadata.namespace.clone();
            owners
                .state()
                .into_iter()
                .filter(|m| m.metadata.namespace == namespace)
                .filter(|m| m.data.pointer("/spec/bootstrap/dataSecretName").and_then(|n| n.as_str()) == name.as_deref())
                .filter_map(|m| infrastructure_of(&m))
                .collect::<Vec<_>>()
        })
        // A Cluster (pause, infrastructure ready) wakes every SSHMachine of it.
        .watches_stream_with(
            clusters,
            move |cluster: DynamicObject| {
                let name = cluster.metadata.name.clone().unwrap_or_default();
                let namespace = cluster.metadata.namespace.clone();
                machines_of_cluster
                    .state()
                    .into_iter()
                    .filter(|m| m.metadata.namespace == namespace)
                    .filter(|m| m.metadata.labels.as_ref().and_then(|l| l.get(capi::CLUSTER_NAME_LABEL)) == Some(&name))
                    .map(|m| ObjectRef::from_obj(&*m))
                    .collect::<Vec<_>>()
            },
            capi::cluster_resource(),
        )
        // A host wakes its consumer; a free host wakes the machines waiting for one.
        .watches(api::<SSHHost>(client, &namespace), scope.config(), move |host: SSHHost| {
            let namespace = host.metadata.namespace.clone();
            match &host.spec.consumer_ref {
                Some(consumer) => vec![ObjectRef::<SSHMachine>::new(&consumer.name).within(namespace.as_deref().unwrap_or_default())],
                None => machines_waiting
                    .state()
                    .into_iter()
                    .filter(|m| m.metadata.namespace == namespace)
                    .filter(|m| m.status.as_ref().and_then(|s| s.phase) == Some(MachinePhase::WaitingForHost))
                    .map(|m| ObjectRef::from_obj(&*m))
                    .collect(),
            }
        })
        .run(measured!("SSHMachine", sshmachine::reconcile), sshmachine::error_policy, ctx);
    drain("SSHMachine", controller).await
}

/// The SSHMachine a Cluster API Machine's infrastructureRef names, if it names one.
fn infrastructure_of(machine: &DynamicObject) -> Option<ObjectRef<SSHMachine>> {
    let infra = machine.data.pointer("/spec/infrastructureRef")?;
    if infra.get("kind").and_then(|k| k.as_str()) != Some("SSHMachine") {
        return None;
    }
    let name = infra.get("name").and_then(|n| n.as_str())?;
    Some(ObjectRef::<SSHMachine>::new(name).within(machine.metadata.namespace.as_deref().unwrap_or_default()))
}

/// Keeps the cache of credential Secrets (those marked for capssh) filled; nothing is woken by
/// it: a host reads its credentials when it connects.
pub async fn run_credentials_cache(client: kube::Client, scope: Scope, ctx: Arc<Context>) -> anyhow::Result<()> {
    let writer = Writer::<Secret>::default();
    let _ = ctx.caches.credentials.set(writer.as_reader());
    caches::fill(api::<Secret>(client, &scope.namespace), caches::credentials_selector(), writer).await
}
