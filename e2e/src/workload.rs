//! What a lifecycle scenario reads and waits on: Cluster API objects in the management plane, and
//! the workload cluster through the kubeconfig Cluster API wrote.

use crate::nodes::NodeFarm;
use crate::tools::tool;
use kube::api::{Api, DynamicObject, ListParams};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Steps and how long each took, printed at the end of a scenario.
#[derive(Default)]
pub struct Timeline {
    steps: Vec<(String, Duration)>,
    lap: Option<Instant>,
    started: Option<Instant>,
}

impl Timeline {
    pub fn start() -> Self {
        let now = Instant::now();
        Timeline { steps: Vec::new(), lap: Some(now), started: Some(now) }
    }

    /// Ends the current step.
    pub fn mark(&mut self, step: &str) {
        let now = Instant::now();
        let took = now - self.lap.unwrap_or(now);
        eprintln!("[timeline] {step}: {:.0}s", took.as_secs_f64());
        self.steps.push((step.to_string(), took));
        self.lap = Some(now);
    }

    pub fn render(&self) -> String {
        let mut out = format!("{:<60}{:>9}\n", "step", "duration");
        for (step, took) in &self.steps {
            out.push_str(&format!("{step:<60}{:>8.0}s\n", took.as_secs_f64()));
        }
        let total = self.started.map(|s| s.elapsed()).unwrap_or_default();
        out.push_str(&format!("{:<60}{:>8.0}s\n", "total", total.as_secs_f64()));
        out
    }
}

/// How long one check of [`wait_for`] may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(120);

/// Waits (polling every 2 s) until `check` returns Ok(Some); on timeout the error carries the
/// last thing `check` said was missing.
pub async fn wait_for<T, F, Fut>(minutes: u64, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Result<T, String>>>,
{
    let deadline = Instant::now() + Duration::from_secs(minutes * 60);
    loop {
        // One check that never returns (a request to an endpoint that went away) must not
        // stall the whole wait past its deadline.
        let last = match tokio::time::timeout(CHECK_TIMEOUT, check()).await {
            Ok(Ok(Ok(value))) => return Ok(value),
            Ok(Ok(Err(missing))) => missing,
            Ok(Err(err)) => format!("error: {err:#}"),
            Err(_) => format!("a check did not return within {} s", CHECK_TIMEOUT.as_secs()),
        };
        anyhow::ensure!(Instant::now() < deadline, "timed out after {minutes} min waiting for {what}; last: {last}");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Every object of a Cluster API kind in `namespace` (e.g. `("cluster.x-k8s.io", "v1beta2", "Machine")`).
pub async fn list(client: &kube::Client, namespace: &str, kind: (&str, &str, &str)) -> anyhow::Result<Vec<DynamicObject>> {
    Ok(api(client, namespace, kind).list(&ListParams::default()).await?.items)
}

/// The namespaced API of a kind given as (group, version, kind).
pub fn api(client: &kube::Client, namespace: &str, (group, version, kind): (&str, &str, &str)) -> Api<DynamicObject> {
    let resource = kube::api::ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(group, version, kind));
    Api::namespaced_with(client.clone(), namespace, &resource)
}

pub const MACHINE: (&str, &str, &str) = ("cluster.x-k8s.io", "v1beta2", "Machine");
pub const CLUSTER: (&str, &str, &str) = ("cluster.x-k8s.io", "v1beta2", "Cluster");
pub const MACHINE_DEPLOYMENT: (&str, &str, &str) = ("cluster.x-k8s.io", "v1beta2", "MachineDeployment");
pub const KUBEADM_CONTROL_PLANE: (&str, &str, &str) = ("controlplane.cluster.x-k8s.io", "v1beta2", "KubeadmControlPlane");
pub const SSH_HOST: (&str, &str, &str) = ("infrastructure.cluster.x-k8s.io", "v1alpha1", "SSHHost");
pub const SSH_MACHINE: (&str, &str, &str) = ("infrastructure.cluster.x-k8s.io", "v1alpha1", "SSHMachine");
pub const SSH_MACHINE_TEMPLATE: (&str, &str, &str) = ("infrastructure.cluster.x-k8s.io", "v1alpha1", "SSHMachineTemplate");

pub fn text<'a>(object: &'a DynamicObject, pointer: &str) -> &'a str {
    object.data.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

/// Machines that are Running with a nodeRef, and a one-line summary of all of them.
pub fn running_machines(machines: &[DynamicObject]) -> (Vec<&DynamicObject>, String) {
    let running = machines.iter().filter(|m| text(m, "/status/phase") == "Running" && !text(m, "/status/nodeRef/name").is_empty()).collect();
    let summary = machines
        .iter()
        .map(|m| format!("{}={}({})", m.metadata.name.as_deref().unwrap_or("?"), text(m, "/status/phase"), text(m, "/spec/version")))
        .collect::<Vec<_>>()
        .join(" ");
    (running, summary)
}

/// The workload cluster, through the admin kubeconfig Cluster API keeps in `<cluster>-kubeconfig`.
pub struct Workload {
    pub kubeconfig: PathBuf,
}

impl Workload {
    /// Writes the kubeconfig from the Secret (once it exists) to `dir`.
    pub async fn from_secret(client: &kube::Client, namespace: &str, cluster: &str, dir: &Path) -> anyhow::Result<Option<Workload>> {
        let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), namespace);
        let Some(secret) = secrets.get_opt(&format!("{cluster}-kubeconfig")).await? else { return Ok(None) };
        let Some(value) = secret.data.as_ref().and_then(|d| d.get("value")) else { return Ok(None) };
        let kubeconfig = dir.join(format!("{cluster}.kubeconfig"));
        std::fs::write(&kubeconfig, &value.0)?;
        Ok(Some(Workload { kubeconfig }))
    }

    /// Waits (up to `minutes`) for the kubeconfig Secret Cluster API writes, and writes it to `dir`.
    pub async fn wait_from_secret(client: &kube::Client, namespace: &str, cluster: &str, dir: &Path, minutes: u64) -> anyhow::Result<Workload> {
        wait_for(minutes, &format!("{cluster}'s kubeconfig"), || async {
            Ok(Workload::from_secret(client, namespace, cluster, dir).await?.ok_or_else(|| "no kubeconfig Secret yet".to_string()))
        })
        .await
    }

    /// A client of the workload cluster, from its kubeconfig.
    /// A client that gives up on a request after a minute (no watches go through it): the
    /// cluster's endpoint is a VIP that moves, and a request sent to a holder that went away is
    /// never answered (kube's default waits 295 s, once per request).
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig)?;
        let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default()).await?;
        config.connect_timeout = Some(Duration::from_secs(10));
        config.read_timeout = Some(Duration::from_secs(60));
        Ok(kube::Client::try_from(config)?)
    }

    /// `kubectl <args>` against the workload cluster; stdout.
    pub fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(tool("kubectl")).arg("--kubeconfig").arg(&self.kubeconfig).args(["--request-timeout", "10s"]).args(args).output()?;
        anyhow::ensure!(out.status.success(), "kubectl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// (name, Ready, kubelet version) of every node.
    pub fn nodes(&self) -> anyhow::Result<Vec<(String, bool, String)>> {
        let list: Value = serde_json::from_str(&self.kubectl(&["get", "nodes", "-o", "json"])?)?;
        Ok(list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|node| {
                let ready = node["status"]["conditions"].as_array().into_iter().flatten().any(|c| c["type"] == "Ready" && c["status"] == "True");
                (
                    node["metadata"]["name"].as_str().unwrap_or_default().to_string(),
                    ready,
                    node["status"]["nodeInfo"]["kubeletVersion"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect())
    }
}

/// Waits until exactly `count` Machines exist, all Running at `version` with a nodeRef, and the
/// workload cluster has exactly those nodes, all Ready at `version`.
pub async fn wait_cluster(
    client: &kube::Client,
    namespace: &str,
    workload: &Workload,
    count: usize,
    version: &str,
    minutes: u64,
) -> anyhow::Result<()> {
    let outcome = wait_for(minutes, &format!("{count} machines Running at {version} and their nodes Ready"), || async {
        // A failed bootstrap is never retried by itself (nothing here replaces the machine):
        // waiting on would only hide its message behind a timeout.
        let ssh_machines = list(client, namespace, SSH_MACHINE).await?;
        if let Some(failed) = failed_bootstrap(&ssh_machines) {
            return Ok(Ok(Err(failed)));
        }
        let machines = list(client, namespace, MACHINE).await?;
        let (running, summary) = running_machines(&machines);
        if machines.len() != count || running.len() != count || machines.iter().any(|m| text(m, "/spec/version") != version) {
            // What capssh says about each of its machines tells why one is not Running.
            let infra: Vec<String> = ssh_machines
                .iter()
                .filter(|m| conditions_not_true(&m.data) != EVERY_CONDITION_TRUE)
                .map(|m| format!("SSHMachine {}: {}", m.metadata.name.as_deref().unwrap_or_default(), conditions_not_true(&m.data)))
                .collect();
            return Ok(Err(format!(
                "machines: {summary}; {}",
                if infra.is_empty() { "no SSHMachine has a condition not True".into() } else { infra.join("; ") }
            )));
        }
        let nodes = match workload.nodes() {
            Ok(nodes) => nodes,
            Err(err) => return Ok(Err(format!("workload cluster: {err:#}"))),
        };
        let good = nodes.iter().filter(|(_, ready, kubelet)| *ready && kubelet == version).count();
        Ok(if nodes.len() == count && good == count { Ok(Ok(())) } else { Err(format!("workload nodes: {nodes:?}")) })
    })
    .await?;
    outcome.map_err(|failed| anyhow::anyhow!("a bootstrap failed while waiting for {count} machines at {version}: {failed}"))
}

/// `<name>: <message>` of the first SSHMachine whose bootstrap failed, if any.
pub fn failed_bootstrap(machines: &[DynamicObject]) -> Option<String> {
    use capssh::api::v1alpha1::conditions::{reasons, types};
    machines.iter().find_map(|m| {
        let conditions = m.data.pointer("/status/conditions")?.as_array()?;
        let failed = conditions.iter().find(|c| c["type"] == types::BOOTSTRAP_SUCCEEDED && c["reason"] == reasons::BOOTSTRAP_FAILED)?;
        Some(format!("{}: {}", m.metadata.name.as_deref().unwrap_or("?"), failed["message"].as_str().unwrap_or_default()))
    })
}

/// Nothing of kubeadm is left on the node: no kubelet running, no cluster configuration, no pods.
pub fn assert_clean(nodes: &NodeFarm, name: &str) -> anyhow::Result<()> {
    let i = nodes.nodes.iter().position(|n| n.name == name).ok_or_else(|| anyhow::anyhow!("no node {name}"))?;
    let state = nodes.exec_ok(
        i,
        "systemctl is-active kubelet || true; ls -A /etc/kubernetes/manifests /var/lib/etcd 2>/dev/null; \
         ls /etc/kubernetes/*.conf 2>/dev/null; ctr -n k8s.io containers ls -q 2>/dev/null | wc -l",
    )?;
    let lines: Vec<&str> = state.lines().filter(|l| !l.trim().is_empty() && !l.ends_with(':')).collect();
    assert_eq!(lines, ["inactive", "0"], "{name} still holds kubeadm state:\n{state}");
    Ok(())
}

/// Sets a MachineDeployment's replicas.
pub async fn scale_machine_deployment(client: &kube::Client, namespace: &str, name: &str, replicas: i64) -> anyhow::Result<()> {
    let patch = kube::api::Patch::Merge(serde_json::json!({"spec": {"replicas": replicas}}));
    api(client, namespace, MACHINE_DEPLOYMENT).patch(name, &kube::api::PatchParams::default(), &patch).await?;
    Ok(())
}

/// The SSHHosts that a machine has claimed.
pub async fn claimed_hosts(client: &kube::Client, namespace: &str) -> anyhow::Result<Vec<String>> {
    let hosts = list(client, namespace, SSH_HOST).await?;
    Ok(hosts.iter().filter(|h| h.data.pointer("/spec/consumerRef").is_some()).filter_map(|h| h.metadata.name.clone()).collect())
}

/// `<name>=<phase>` of every SSHHost that is claimed or not Available.
pub async fn busy_hosts(client: &kube::Client, namespace: &str) -> anyhow::Result<Vec<String>> {
    let hosts = list(client, namespace, SSH_HOST).await?;
    Ok(hosts
        .iter()
        .filter(|h| text(h, "/status/phase") != "Available" || h.data.pointer("/spec/consumerRef").is_some())
        .map(|h| format!("{}={}", h.metadata.name.as_deref().unwrap_or("?"), text(h, "/status/phase")))
        .collect())
}

/// A copy of SSHMachineTemplate `name` for Kubernetes `version`, its mirror's SHA256SUMS pinned
/// to `pin` (a pin names one version); returns the copy's name.
pub async fn pinned_copy(client: &kube::Client, namespace: &str, name: &str, version: &str, pin: &str) -> anyhow::Result<String> {
    let templates = api(client, namespace, SSH_MACHINE_TEMPLATE);
    let mut template = templates.get(name).await?;
    let copy = format!("{name}-{}", version.replace('.', "-"));
    template.metadata = kube::api::ObjectMeta { name: Some(copy.clone()), labels: template.metadata.labels.clone(), ..Default::default() };
    let artifacts = template
        .data
        .pointer_mut("/spec/template/spec/preparation/artifacts")
        .and_then(serde_json::Value::as_object_mut)
        .ok_or_else(|| anyhow::anyhow!("SSHMachineTemplate {name} prepares from no artifact mirror"))?;
    artifacts.insert("checksumsSHA256".into(), serde_json::json!(pin));
    templates.create(&kube::api::PostParams::default(), &template).await?;
    Ok(copy)
}

/// A job of the machine's runs on its host: its preparation or its bootstrap. Either can be the
/// short one (a worker's `kubeadm join` on a prepared host can take a second), so a wait that
/// must catch a machine mid-job waits for both.
pub const HOST_JOB_RUNNING: [(&str, &str); 2] = [("HostPrepared", "Preparing"), ("BootstrapSucceeded", "Bootstrapping")];

/// Ok once some SSHMachine in `namespace` has one of `states`' conditions (type) with its reason.
pub async fn ssh_machine_in(client: &kube::Client, namespace: &str, states: &[(&str, &str)]) -> Result<(), String> {
    let machines = list(client, namespace, SSH_MACHINE).await.map_err(|e| e.to_string())?;
    let found = machines.iter().any(|m| {
        m.data
            .pointer("/status/conditions")
            .and_then(serde_json::Value::as_array)
            .into_iter()
            .flatten()
            .any(|c| states.iter().any(|(kind, reason)| c["type"] == *kind && c["reason"] == *reason))
    });
    if found {
        return Ok(());
    }
    let mut seen: Vec<String> =
        machines.iter().map(|m| format!("SSHMachine {}: {}", m.metadata.name.as_deref().unwrap_or_default(), conditions_not_true(&m.data))).collect();
    // No SSHMachine yet: what Cluster API is waiting on says why.
    if machines.is_empty() {
        for kind in [CLUSTER, MACHINE] {
            for object in list(client, namespace, kind).await.unwrap_or_default() {
                seen.push(format!("{} {}: {}", kind.2, object.metadata.name.as_deref().unwrap_or_default(), conditions_not_true(&object.data)));
            }
        }
    }
    Err(format!(
        "no SSHMachine with {}; {}",
        states.iter().map(|(kind, reason)| format!("{kind}={reason}")).collect::<Vec<_>>().join(" or "),
        if seen.is_empty() { "no Cluster, Machine or SSHMachine".to_string() } else { seen.join("; ") }
    ))
}

/// What [`conditions_not_true`] says when there is none.
const EVERY_CONDITION_TRUE: &str = "every condition True";

/// An object's conditions that are not True, as `type=status reason: message`, for a wait's
/// last word when it times out.
pub fn conditions_not_true(data: &Value) -> String {
    let conditions: Vec<String> = data
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|c| c["status"] != "True")
        .map(|c| {
            let message: String = c["message"].as_str().unwrap_or_default().chars().take(160).collect();
            format!(
                "{}={} {}: {message}",
                c["type"].as_str().unwrap_or_default(),
                c["status"].as_str().unwrap_or_default(),
                c["reason"].as_str().unwrap_or_default()
            )
        })
        .collect();
    if conditions.is_empty() { EVERY_CONDITION_TRUE.to_string() } else { conditions.join(", ") }
}
