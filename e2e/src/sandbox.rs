//! What the e2e nodes need that a real host does not, laid over a shipped flavor once clusterctl
//! has rendered it, so that the suites run the templates users get (not a copy of them):
//!
//! - host preparation (every SSHMachineTemplate): binaries and control-plane images from the
//!   artifact mirror (its SHA256SUMS pinned, as capssh requires for plain http), everything else
//!   pulled through the registry mirror of registry.k8s.io, docker.io, quay.io and ghcr.io, and
//!   from the registry by its own address (images that clusterctl's `images` setting sends
//!   there), with TLS from its own CA (a ConfigMap) and basic auth (a Secret). An air-gapped site
//!   sets the same fields;
//! - the kubelets (every nodeRegistration, a ClusterClass's KubeadmControlPlaneTemplate's too):
//!   `--fail-cgroupv1=false` (this machine's kernel runs cgroup v1) with kubeadm's
//!   SystemVerification preflight check skipped, and no eviction or image collection for disk
//!   space (the nodes' disks are folders on this machine's one shared disk, whose free share is
//!   not theirs; kind configures its nodes the same way);
//! - the Cluster's label `cni: kube-router`, which the CNI add-on's ClusterResourceSet selects.
//!
//! Pod and Service networks come through the flavors' own variables (`SSH_POD_CIDR`,
//! `SSH_SERVICE_CIDR`).

use serde_json::{Value, json};

/// Where the nodes get what they install and pull.
pub struct SandboxSettings {
    /// `http://…` of the artifact mirror and the SHA-256 of its SHA256SUMS.
    pub artifacts_url: String,
    pub artifacts_checksums_sha256: String,
    /// `https://host:port` of the registry mirror.
    pub registry_endpoint: String,
    pub registry_ca_config_map: String,
    pub registry_credentials_secret: String,
}

/// The registries the nodes pull through the mirror.
pub const MIRRORED_REGISTRIES: &[&str] = &["registry.k8s.io", "docker.io", "quay.io", "ghcr.io"];

/// The kubelet flags the nodes need (name, value).
pub const KUBELET_ARGS: &[(&str, &str)] = &[
    ("fail-cgroupv1", "false"),
    ("eviction-hard", "nodefs.available<0%,nodefs.inodesFree<0%,imagefs.available<0%"),
    ("image-gc-high-threshold", "100"),
];

/// Lays the sandbox's needs over rendered documents (in place).
pub fn adapt(documents: &mut [Value], settings: &SandboxSettings) -> anyhow::Result<()> {
    let itself = settings.registry_endpoint.trim_start_matches("https://").trim_end_matches('/');
    let mirrors: Vec<Value> =
        MIRRORED_REGISTRIES.iter().chain([&itself]).map(|r| json!({"registry": r, "endpoint": settings.registry_endpoint})).collect();
    let preparation = json!({
        "mode": "Artifacts",
        "artifacts": {"url": settings.artifacts_url, "checksumsSHA256": settings.artifacts_checksums_sha256},
        "registry": {
            "mirrors": mirrors,
            "caRef": {"kind": "ConfigMap", "name": settings.registry_ca_config_map},
            "credentialsSecretRef": {"name": settings.registry_credentials_secret}
        }
    });
    adapt_with_preparation(documents, &preparation)
}

/// [`adapt`] with another `preparation` for every SSHMachineTemplate.
pub fn adapt_with_preparation(documents: &mut [Value], preparation: &Value) -> anyhow::Result<()> {
    let mut seen = (0, 0, 0);
    for document in documents.iter_mut() {
        match document["kind"].as_str().unwrap_or_default() {
            "Cluster" => {
                document["metadata"]["labels"]["cni"] = json!("kube-router");
                seen.0 += 1;
            }
            "SSHMachineTemplate" => {
                document["spec"]["template"]["spec"]["preparation"] = preparation.clone();
                seen.1 += 1;
            }
            _ => {
                if adapt_kubelets(document)? {
                    seen.2 += 1;
                }
            }
        }
    }
    anyhow::ensure!(seen.0 == 1 && seen.1 > 0 && seen.2 > 0, "a flavor without a Cluster, SSHMachineTemplates or kubeadm configurations");
    Ok(())
}

/// The kubelets of a kubeadm configuration (a KubeadmControlPlane, a ClusterClass's
/// KubeadmControlPlaneTemplate, from which its clusters' control planes are made, or a
/// KubeadmConfigTemplate) get [`adapt_node_registration`]. False for any other document.
fn adapt_kubelets(document: &mut Value) -> anyhow::Result<bool> {
    let spec = match document["kind"].as_str().unwrap_or_default() {
        "KubeadmControlPlane" => &mut document["spec"]["kubeadmConfigSpec"],
        "KubeadmControlPlaneTemplate" => &mut document["spec"]["template"]["spec"]["kubeadmConfigSpec"],
        "KubeadmConfigTemplate" => {
            adapt_node_registration(&mut document["spec"]["template"]["spec"]["joinConfiguration"]["nodeRegistration"])?;
            return Ok(true);
        }
        _ => return Ok(false),
    };
    adapt_node_registration(&mut spec["initConfiguration"]["nodeRegistration"])?;
    adapt_node_registration(&mut spec["joinConfiguration"]["nodeRegistration"])?;
    Ok(true)
}

/// The kubelet flags and the skipped preflight check, added to what the flavor sets.
fn adapt_node_registration(registration: &mut Value) -> anyhow::Result<()> {
    if registration.is_null() {
        *registration = json!({});
    }
    let registration = registration.as_object_mut().ok_or_else(|| anyhow::anyhow!("a nodeRegistration that is not an object"))?;
    let args = registration.entry("kubeletExtraArgs").or_insert_with(|| json!([]));
    let args = args.as_array_mut().ok_or_else(|| anyhow::anyhow!("kubeletExtraArgs is not a list"))?;
    for (name, value) in KUBELET_ARGS {
        args.retain(|a| a["name"] != *name);
        args.push(json!({"name": name, "value": value}));
    }
    let ignored = registration.entry("ignorePreflightErrors").or_insert_with(|| json!([]));
    let ignored = ignored.as_array_mut().ok_or_else(|| anyhow::anyhow!("ignorePreflightErrors is not a list"))?;
    if !ignored.iter().any(|c| c == "SystemVerification") {
        ignored.push(json!("SystemVerification"));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Sandbox settings as a suite makes them (for tests of what adapts templates).
    pub(crate) fn settings() -> SandboxSettings {
        SandboxSettings {
            artifacts_url: "http://198.18.0.129:8080".into(),
            artifacts_checksums_sha256: "ab".repeat(32),
            registry_endpoint: "https://198.18.0.129:5000".into(),
            registry_ca_config_map: "registry-ca".into(),
            registry_credentials_secret: "registry-pull".into(),
        }
    }

    #[test]
    fn the_shipped_default_flavor_gets_preparation_kubelet_flags_and_the_cni_label_and_keeps_its_own() {
        let template = std::fs::read_to_string(crate::tools::repo_root().join("templates/cluster-template.yaml")).unwrap();
        let rendered = template
            .replace("${CLUSTER_NAME}", "c")
            .replace("${CONTROL_PLANE_MACHINE_COUNT}", "3")
            .replace("${WORKER_MACHINE_COUNT}", "1")
            .replace("${KUBERNETES_VERSION}", "v1.36.3")
            .replace("${SSH_CONTROL_PLANE_ENDPOINT_HOST}", "198.18.0.250");
        let rendered = regex_free_defaults(&rendered);
        let mut documents = crate::apply::documents(&rendered).unwrap();
        adapt(&mut documents, &settings()).unwrap();
        let kind = |k: &'static str| documents.iter().filter(move |d| d["kind"] == k);
        assert_eq!(kind("Cluster").next().unwrap()["metadata"]["labels"]["cni"], "kube-router");
        for template in kind("SSHMachineTemplate") {
            let preparation = &template["spec"]["template"]["spec"]["preparation"];
            assert_eq!(preparation["mode"], "Artifacts");
            let mirrors = preparation["registry"]["mirrors"].as_array().unwrap();
            assert_eq!(mirrors.len(), MIRRORED_REGISTRIES.len() + 1);
            assert_eq!(mirrors.last().unwrap(), &json!({"registry": "198.18.0.129:5000", "endpoint": "https://198.18.0.129:5000"}));
        }
        let control_plane = kind("KubeadmControlPlane").next().unwrap();
        for phase in ["initConfiguration", "joinConfiguration"] {
            let registration = &control_plane["spec"]["kubeadmConfigSpec"][phase]["nodeRegistration"];
            let args = registration["kubeletExtraArgs"].as_array().unwrap();
            assert!(args.iter().any(|a| a["name"] == "provider-id"), "the flavor's own flag stays: {args:?}");
            assert!(args.iter().any(|a| a["name"] == "fail-cgroupv1" && a["value"] == "false"), "{args:?}");
            assert_eq!(registration["ignorePreflightErrors"], json!(["SystemVerification"]));
        }
        let workers = kind("KubeadmConfigTemplate").next().unwrap();
        let args = workers["spec"]["template"]["spec"]["joinConfiguration"]["nodeRegistration"]["kubeletExtraArgs"].as_array().unwrap();
        assert_eq!(args.len(), 1 + KUBELET_ARGS.len(), "{args:?}");
        // kube-vip stays as the flavor ships it.
        assert!(control_plane["spec"]["kubeadmConfigSpec"]["files"][0]["content"].as_str().unwrap().contains("kube-vip"));
    }

    /// `${NAME:=default}` → `default`, as clusterctl renders an unset variable.
    fn regex_free_defaults(text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find('}').map(|e| start + e).expect("a closed variable");
            let inner = &rest[start + 2..end];
            out.push_str(inner.split_once(":=").map(|(_, d)| d).unwrap_or(""));
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        out
    }
}
