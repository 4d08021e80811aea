//! What shows that a workload cluster runs workloads, not only Ready nodes: its add-ons up
//! (kube-proxy, CoreDNS, the CNI), a Deployment with a Pod on every node, Pod-to-Pod traffic
//! across nodes, a ClusterIP Service reached from a Pod on another node by its IP and by its DNS
//! name (resolved in the Pod by CoreDNS), and the API server reaching Pods and kubelets (its Pod
//! proxy, `kubectl logs`, `kubectl exec`). The Pods run agnhost's netexec, whose `/dial` makes
//! the Pod itself send the requests.

use crate::addon_images::agnhost_reference;
use crate::workload::{Workload, wait_for};
use serde_json::Value;

/// The namespace of the proof workload.
const NS: &str = "capssh-proof";
const APP: &str = "echo";

/// Runs every check on `workload`, which must have `nodes` Ready nodes. With
/// `CAPSSH_E2E_HOLD_SECONDS` set, a failure holds everything up that long first (to look around).
pub async fn check_workloads(workload: &Workload, nodes: usize) -> anyhow::Result<()> {
    let checked = run_checks(workload, nodes).await;
    if let (Err(err), Some(hold)) = (&checked, std::env::var("CAPSSH_E2E_HOLD_SECONDS").ok().and_then(|s| s.parse().ok())) {
        eprintln!("workload check failed ({err:#}); holding for {hold} s: kubectl --kubeconfig {}", workload.kubeconfig.display());
        tokio::time::sleep(std::time::Duration::from_secs(hold)).await;
    }
    checked
}

async fn run_checks(workload: &Workload, nodes: usize) -> anyhow::Result<()> {
    wait_addons(workload).await?;
    let pods = deploy_echo(workload, nodes).await?;
    pod_to_pod_across_nodes(workload, &pods).await?;
    let cluster_ip = workload.kubectl(&["get", "service", APP, "-n", NS, "-o", "jsonpath={.spec.clusterIP}"])?;
    service_from_another_node(workload, &pods, &cluster_ip, &cluster_ip).await?;
    let dns_server = workload.kubectl(&["get", "service", "kube-dns", "-n", "kube-system", "-o", "jsonpath={.spec.clusterIP}"])?;
    let servers = exec(workload, &pods[0].name, &["/agnhost", "dns-server-list"])?;
    anyhow::ensure!(servers.contains(dns_server.as_str()), "Pods do not ask the cluster DNS ({dns_server}): {servers}");
    // The name is resolved inside the Pod, by CoreDNS.
    service_from_another_node(workload, &pods, &format!("{APP}.{NS}.svc.cluster.local"), &cluster_ip).await?;
    let logs = workload.kubectl(&["logs", "-n", NS, &pods[0].name])?;
    anyhow::ensure!(logs.contains("8080"), "kubectl logs of {} shows no server start:\n{logs}", pods[0].name);
    Ok(())
}

/// kube-proxy and kube-router on every node, CoreDNS available.
async fn wait_addons(workload: &Workload) -> anyhow::Result<()> {
    wait_for(10, "kube-proxy and kube-router on every node and CoreDNS available", || async {
        let mut missing = Vec::new();
        for daemon_set in ["kube-proxy", "kube-router"] {
            let status = match workload.kubectl(&["get", "daemonset", daemon_set, "-n", "kube-system", "-o", "json"]) {
                Ok(text) => serde_json::from_str::<Value>(&text)?["status"].clone(),
                Err(err) => return Ok(Err(format!("{err:#}"))),
            };
            let (desired, ready, updated) = (&status["desiredNumberScheduled"], &status["numberReady"], &status["updatedNumberScheduled"]);
            if desired.as_u64().unwrap_or(0) == 0 || desired != ready || desired != updated {
                missing.push(format!("{daemon_set} {ready}/{desired} ready, {updated} updated"));
            }
        }
        let coredns = match workload.kubectl(&["get", "deployment", "coredns", "-n", "kube-system", "-o", "json"]) {
            Ok(text) => serde_json::from_str::<Value>(&text)?,
            Err(err) => return Ok(Err(format!("{err:#}"))),
        };
        let (wanted, available) = (&coredns["spec"]["replicas"], &coredns["status"]["availableReplicas"]);
        if wanted != available {
            missing.push(format!("coredns {available}/{wanted} available"));
        }
        Ok(if missing.is_empty() { Ok(()) } else { Err(missing.join("; ")) })
    })
    .await
}

/// A Pod of the proof Deployment.
#[derive(Debug, Clone)]
pub struct ProofPod {
    pub name: String,
    pub node: String,
    pub ip: String,
}

/// The Deployment (agnhost netexec on 8080, one Pod per node, control planes included) and its
/// ClusterIP Service (80 → 8080); waits until a Ready Pod runs on each of the `nodes` nodes.
async fn deploy_echo(workload: &Workload, nodes: usize) -> anyhow::Result<Vec<ProofPod>> {
    let image = agnhost_reference()?;
    let manifest = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": APP, "namespace": NS},
         "spec": {"replicas": nodes, "selector": {"matchLabels": {"app": APP}},
                  "template": {"metadata": {"labels": {"app": APP}},
                               "spec": {"tolerations": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}],
                                        "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                                            {"labelSelector": {"matchLabels": {"app": APP}}, "topologyKey": "kubernetes.io/hostname"}]}},
                                        "containers": [{"name": APP, "image": image, "args": ["netexec", "--http-port=8080"],
                                                        "ports": [{"containerPort": 8080}],
                                                        "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 2}}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": APP, "namespace": NS},
         "spec": {"selector": {"app": APP}, "ports": [{"port": 80, "targetPort": 8080}]}}
    ]});
    let file = workload.kubeconfig.with_file_name("proof-workload.json");
    std::fs::write(&file, serde_json::to_vec(&manifest)?)?;
    let file = file.to_string_lossy().to_string();
    workload.kubectl(&["apply", "-f", &file])?;
    wait_for(10, &format!("a Ready {APP} Pod on each of {nodes} nodes"), || async {
        let list: Value = match workload.kubectl(&["get", "pods", "-n", NS, "-l", &format!("app={APP}"), "-o", "json"]) {
            Ok(text) => serde_json::from_str(&text)?,
            Err(err) => return Ok(Err(format!("{err:#}"))),
        };
        let mut pods: Vec<ProofPod> = Vec::new();
        let mut states = Vec::new();
        for pod in list["items"].as_array().into_iter().flatten() {
            let name = pod["metadata"]["name"].as_str().unwrap_or_default().to_string();
            let node = pod["spec"]["nodeName"].as_str().unwrap_or_default().to_string();
            let ready = pod["status"]["conditions"].as_array().into_iter().flatten().any(|c| c["type"] == "Ready" && c["status"] == "True");
            let terminating = pod["metadata"]["deletionTimestamp"].is_string();
            states.push(format!(
                "{name}@{node}:{}",
                if terminating {
                    "terminating"
                } else if ready {
                    "ready"
                } else {
                    "not-ready"
                }
            ));
            if ready && !terminating {
                pods.push(ProofPod { name, node, ip: pod["status"]["podIP"].as_str().unwrap_or_default().to_string() });
            }
        }
        let mut on = pods.iter().map(|p| p.node.clone()).collect::<Vec<_>>();
        on.sort();
        on.dedup();
        Ok(if pods.len() == nodes && on.len() == nodes { Ok(pods) } else { Err(states.join(" ")) })
    })
    .await
}

/// `kubectl exec <pod> -- <command>` in the proof namespace.
fn exec(workload: &Workload, pod: &str, command: &[&str]) -> anyhow::Result<String> {
    let mut args = vec!["exec", "-n", NS, pod, "--"];
    args.extend_from_slice(command);
    workload.kubectl(&args)
}

/// Has `pod` (agnhost netexec) make `tries` HTTP requests for `/hostname` to `host:port` (its
/// `/dial` endpoint, reached through the API server's Pod proxy, as Kubernetes' own network
/// tests do); the answers.
fn dial_from(workload: &Workload, pod: &str, host: &str, port: u16, tries: u32) -> anyhow::Result<Vec<String>> {
    let path = format!("/api/v1/namespaces/{NS}/pods/{pod}:8080/proxy/dial?request=hostname&protocol=http&host={host}&port={port}&tries={tries}");
    let answer: Value = serde_json::from_str(&workload.kubectl(&["get", "--raw", &path])?)?;
    let responses: Vec<String> = answer["responses"].as_array().into_iter().flatten().filter_map(|r| r.as_str().map(str::to_string)).collect();
    anyhow::ensure!(!responses.is_empty(), "{pod} got no answer from {host}:{port}: {answer}");
    Ok(responses)
}

/// Each Pod asks the next one (on another node) for its hostname by Pod IP: once through the
/// API server's proxy, and once by a TCP connection from `kubectl exec`. The nodes learn a new
/// node's Pod route by BGP a moment after it joins, so this is retried for up to two minutes.
async fn pod_to_pod_across_nodes(workload: &Workload, pods: &[ProofPod]) -> anyhow::Result<()> {
    wait_for(2, "each Pod to reach the Pod on the next node", || async {
        Ok(each_pod_reaches_the_next(workload, pods).map_err(|err| format!("{err:#}")))
    })
    .await
}

fn each_pod_reaches_the_next(workload: &Workload, pods: &[ProofPod]) -> anyhow::Result<()> {
    for (i, from) in pods.iter().enumerate() {
        let to = &pods[(i + 1) % pods.len()];
        anyhow::ensure!(from.node != to.node, "two proof Pods on {}", from.node);
        let context = || format!("{} on {} to {} on {} ({})", from.name, from.node, to.name, to.node, to.ip);
        let answers = dial_from(workload, &from.name, &to.ip, 8080, 1).map_err(|err| anyhow::anyhow!("{}: {err:#}", context()))?;
        anyhow::ensure!(answers == [to.name.clone()], "{}: answered as {answers:?}", context());
        exec(workload, &from.name, &["/agnhost", "connect", &format!("{}:8080", to.ip), "--timeout=5s"])
            .map_err(|err| anyhow::anyhow!("kubectl exec, {}: {err:#}", context()))?;
    }
    Ok(())
}

/// From the first Pod, the Service at `host` answers from a Pod on another node (the Service
/// balances at random; among 20 answers, missing the other node's Pods has odds 2^-20 or less).
///
/// kube-proxy programs a new endpoint a moment after its Pod turns Ready, so this is retried for
/// up to two minutes.
async fn service_from_another_node(workload: &Workload, pods: &[ProofPod], host: &str, cluster_ip: &str) -> anyhow::Result<()> {
    wait_for(2, &format!("the Service at {host} to answer from another node"), || async {
        Ok(service_answers_from_another_node(workload, pods, host, cluster_ip).map_err(|err| format!("{err:#}")))
    })
    .await
}

fn service_answers_from_another_node(workload: &Workload, pods: &[ProofPod], host: &str, cluster_ip: &str) -> anyhow::Result<()> {
    let from = &pods[0];
    let answers = dial_from(workload, &from.name, host, 80, 20).map_err(|err| anyhow::anyhow!("the Service at {host} ({cluster_ip}): {err:#}"))?;
    for answer in &answers {
        anyhow::ensure!(pods.iter().any(|p| &p.name == answer), "the Service at {host} answered {answer:?}, no proof Pod");
    }
    anyhow::ensure!(
        answers.iter().any(|a| pods.iter().any(|p| &p.name == a && p.node != from.node)),
        "the Service at {host} only ever answered from {}'s own node: {answers:?}",
        from.name
    );
    Ok(())
}
