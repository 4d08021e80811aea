//! What a provider installed by `clusterctl init` promises once it runs as Pods, checked through
//! kubectl against the cluster: Deployments Available from the expected images, cert-manager's
//! certificate behind capssh's webhook, Ready replicas and the Lease, the probe, and the logs.

use crate::workload::Workload;
use serde_json::Value;
use std::path::Path;

pub const CAPSSH_NS: &str = "capssh-system";
pub const CAPSSH_DEPLOYMENT: &str = "capssh-controller-manager";

/// Every namespace `clusterctl init` fills, and its Deployments.
pub const PROVIDERS: [(&str, &[&str]); 5] = [
    ("cert-manager", &["cert-manager", "cert-manager-cainjector", "cert-manager-webhook"]),
    ("capi-system", &["capi-controller-manager"]),
    ("capi-kubeadm-bootstrap-system", &["capi-kubeadm-bootstrap-controller-manager"]),
    ("capi-kubeadm-control-plane-system", &["capi-kubeadm-control-plane-controller-manager"]),
    (CAPSSH_NS, &[CAPSSH_DEPLOYMENT]),
];

pub fn kubectl_json(cluster: &Workload, args: &[&str]) -> anyhow::Result<Value> {
    Ok(serde_json::from_str(&cluster.kubectl(&[args, &["-o", "json"]].concat())?)?)
}

pub fn items(list: &Value) -> &[Value] {
    list["items"].as_array().map(Vec::as_slice).unwrap_or_default()
}

/// Every provider Deployment Available, each of its Pods Running from an image of the registry.
pub fn check_providers_run_as_pods(cluster: &Workload, image_repository: &str) -> anyhow::Result<()> {
    for (ns, deployments) in PROVIDERS {
        for name in deployments {
            let deployment = kubectl_json(cluster, &["-n", ns, "get", "deployment", name])?;
            let available =
                deployment["status"]["conditions"].as_array().into_iter().flatten().any(|c| c["type"] == "Available" && c["status"] == "True");
            anyhow::ensure!(available, "{ns}/{name} is not Available: {}", deployment["status"]);
        }
        for pod in items(&kubectl_json(cluster, &["-n", ns, "get", "pods"])?) {
            let name = pod["metadata"]["name"].as_str().unwrap_or_default();
            anyhow::ensure!(pod["status"]["phase"] == "Running", "{ns}/{name} is {}", pod["status"]["phase"]);
            for container in pod["spec"]["containers"].as_array().into_iter().flatten() {
                let image = container["image"].as_str().unwrap_or_default();
                anyhow::ensure!(image.starts_with(&format!("{image_repository}/")), "{ns}/{name} runs {image}, not an image of {image_repository}");
            }
        }
    }
    let capssh = items(&kubectl_json(cluster, &["-n", CAPSSH_NS, "get", "pods"])?).to_vec();
    for pod in &capssh {
        anyhow::ensure!(pod["spec"]["serviceAccountName"] == "capssh-manager", "capssh runs as {}", pod["spec"]["serviceAccountName"]);
    }
    Ok(())
}

/// capssh's validating webhook trusts the CA that cert-manager put into the serving certificate's
/// Secret (cainjector copied it), and the Certificate is Ready.
pub fn check_webhook_certificate_from_cert_manager(cluster: &Workload) -> anyhow::Result<()> {
    let certificate = kubectl_json(cluster, &["-n", CAPSSH_NS, "get", "certificates.cert-manager.io", "capssh-serving-cert"])?;
    let ready = certificate["status"]["conditions"].as_array().into_iter().flatten().any(|c| c["type"] == "Ready" && c["status"] == "True");
    anyhow::ensure!(ready, "capssh's Certificate is not Ready: {}", certificate["status"]);
    let secret = kubectl_json(cluster, &["-n", CAPSSH_NS, "get", "secret", "capssh-webhook-service-cert"])?;
    let ca = secret["data"]["ca.crt"].as_str().unwrap_or_default();
    anyhow::ensure!(!ca.is_empty(), "cert-manager's Secret holds no ca.crt");
    let webhooks = kubectl_json(cluster, &["get", "validatingwebhookconfiguration", "capssh-validating-webhook-configuration"])?;
    for webhook in webhooks["webhooks"].as_array().into_iter().flatten() {
        anyhow::ensure!(webhook["clientConfig"]["caBundle"] == ca, "{}: caBundle is not cert-manager's CA", webhook["name"]);
        anyhow::ensure!(webhook["clientConfig"]["service"]["name"] == "capssh-webhook-service", "{}: not through the Service", webhook["name"]);
    }
    Ok(())
}

/// Names of capssh's Ready Pods.
pub fn ready_capssh_pods(cluster: &Workload) -> anyhow::Result<Vec<String>> {
    let pods = kubectl_json(cluster, &["-n", CAPSSH_NS, "get", "pods", "-l", "control-plane=controller-manager"])?;
    Ok(items(&pods)
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter(|p| p["status"]["conditions"].as_array().into_iter().flatten().any(|c| c["type"] == "Ready" && c["status"] == "True"))
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
        .collect())
}

/// Ok with capssh's Ready Pods once there are `count` of them.
pub fn ready_replicas(cluster: &Workload, count: usize) -> anyhow::Result<Result<Vec<String>, String>> {
    let pods = ready_capssh_pods(cluster)?;
    Ok(if pods.len() == count { Ok(pods) } else { Err(format!("Ready: {pods:?}")) })
}

/// The Pod holding capssh's Lease, when it is one of the Deployment's Ready Pods.
pub fn leader_among_replicas(cluster: &Workload) -> anyhow::Result<Result<String, String>> {
    let lease = kubectl_json(cluster, &["-n", CAPSSH_NS, "get", "lease", "capssh-leader"]);
    let holder = match lease {
        Ok(lease) => lease["spec"]["holderIdentity"].as_str().unwrap_or_default().to_string(),
        Err(err) => return Ok(Err(format!("{err:#}"))),
    };
    let pods = ready_capssh_pods(cluster)?;
    Ok(if pods.contains(&holder) { Ok(holder) } else { Err(format!("holder {holder:?}, Ready Pods {pods:?}")) })
}

/// Sets the number of capssh's replicas.
pub fn scale_capssh(cluster: &Workload, replicas: usize) -> anyhow::Result<()> {
    cluster.kubectl(&["-n", CAPSSH_NS, "scale", &format!("deployment/{CAPSSH_DEPLOYMENT}"), &format!("--replicas={replicas}")])?;
    Ok(())
}

/// Keeps the log of `leader`'s Pod in `work/<pod>.log`, deletes the Pod, and returns the Pod
/// that holds the Lease next (another replica, or the Deployment's replacement).
pub async fn delete_leader_pod(cluster: &Workload, leader: &str, work: &Path) -> anyhow::Result<String> {
    std::fs::write(work.join(format!("{leader}.log")), cluster.kubectl(&["-n", CAPSSH_NS, "logs", leader])?)?;
    cluster.kubectl(&["-n", CAPSSH_NS, "delete", "pod", leader, "--wait=false"])?;
    crate::workload::wait_for(3, "another Pod holding the lease", || async {
        Ok(match leader_among_replicas(cluster)? {
            Ok(next) if next != leader => Ok(next),
            other => Err(format!("lease: {other:?}")),
        })
    })
    .await
}

/// Readiness is the manager's /readyz (which waits for the API server and the webhook), and each
/// Ready Pod answers it: asked through the API server's Pod proxy.
pub fn check_readiness_probe(cluster: &Workload) -> anyhow::Result<()> {
    let deployment = kubectl_json(cluster, &["-n", CAPSSH_NS, "get", "deployment", CAPSSH_DEPLOYMENT])?;
    let probe = &deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"];
    anyhow::ensure!(probe["path"] == "/readyz", "capssh's readiness probe: {probe}");
    for pod in ready_capssh_pods(cluster)? {
        let answer = cluster.kubectl(&["get", "--raw", &format!("/api/v1/namespaces/{CAPSSH_NS}/pods/{pod}:9440/proxy/readyz")])?;
        anyhow::ensure!(answer.trim() == "ok", "{pod}/readyz: {answer}");
    }
    Ok(())
}

/// Every Pod's log of every provider namespace, into `work/pods/`; returns capssh's (Pod, log).
pub fn save_pod_logs(cluster: &Workload, work: &Path) -> Vec<(String, String)> {
    let dir = work.join("pods");
    let _ = std::fs::create_dir_all(&dir);
    let mut capssh = Vec::new();
    for (ns, _) in PROVIDERS {
        let Ok(pods) = kubectl_json(cluster, &["-n", ns, "get", "pods"]) else { continue };
        for pod in items(&pods) {
            let name = pod["metadata"]["name"].as_str().unwrap_or_default();
            let log = cluster.kubectl(&["-n", ns, "logs", name, "--all-containers"]).unwrap_or_else(|err| format!("{err:#}"));
            let _ = std::fs::write(dir.join(format!("{ns}-{name}.log")), &log);
            if ns == CAPSSH_NS {
                capssh.push((name.to_string(), log));
            }
        }
    }
    capssh
}

/// Each line of capssh's logs is a JSON object with a level and a message; none is a request the
/// API server refused for lack of RBAC.
pub fn check_capssh_logs(logs: &[(String, String)]) -> anyhow::Result<()> {
    anyhow::ensure!(logs.len() >= 3, "logs of {} capssh Pods (the running one and the two deleted expected)", logs.len());
    // A replica that never led logs only its start; the leaders log their work, Event by Event.
    let provisioned = logs.iter().flat_map(|(_, log)| log.lines()).filter(|l| l.contains(r#""reason":"Provisioned""#)).count();
    anyhow::ensure!(provisioned > 0, "no capssh Pod logged a machine Provisioned");
    for (pod, log) in logs {
        anyhow::ensure!(log.lines().count() > 0, "{pod} logged nothing");
        for line in log.lines().filter(|l| !l.trim().is_empty()) {
            let entry: Value = serde_json::from_str(line).map_err(|err| anyhow::anyhow!("{pod}: not a JSON line ({err}): {line}"))?;
            anyhow::ensure!(entry["level"].is_string() && entry["timestamp"].is_string(), "{pod}: a log line without level or timestamp: {line}");
            anyhow::ensure!(entry["status"] != 403 && !line.contains("is forbidden: User"), "{pod}: refused by RBAC: {line}");
        }
    }
    Ok(())
}
