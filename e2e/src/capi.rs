//! Cluster API's own manifests, from the Go module pinned in hack/tools/capi.

use crate::apply::{apply_all, documents, wait_established};
use crate::tools::module_dir;
use base64::Engine;
use serde_json::{Value, json};
use std::path::Path;

/// One of Cluster API's three providers, as its manifests (and `clusterctl init`) name it.
#[derive(Clone, Copy, Debug)]
pub struct Provider {
    /// The `cluster.x-k8s.io/provider` label value.
    pub label: &'static str,
    /// Its folder in the Cluster API module (holding config/crd/bases and config/webhook).
    pub dir: &'static str,
    /// Suffix of its webhook configurations' names: all three ship the same names, which
    /// kustomize's namePrefix tells apart in a real install (the tags CAPI's envtest uses).
    pub tag: &'static str,
    /// Whether its CRDs carry the contract labels (`cluster.x-k8s.io/v1beta1: v1beta1`, ...):
    /// the bootstrap and control-plane kustomizations add them, so core can find the contract
    /// version of the kinds a Cluster refers to.
    pub contract_labels: bool,
}

pub const CORE: Provider = Provider { label: "cluster-api", dir: "core", tag: "config", contract_labels: false };
pub const KUBEADM_BOOTSTRAP: Provider = Provider { label: "bootstrap-kubeadm", dir: "bootstrap/kubeadm", tag: "bootstrap", contract_labels: true };
pub const KUBEADM_CONTROL_PLANE: Provider =
    Provider { label: "control-plane-kubeadm", dir: "controlplane/kubeadm", tag: "cp", contract_labels: true };
pub const PROVIDERS: [Provider; 3] = [CORE, KUBEADM_BOOTSTRAP, KUBEADM_CONTROL_PLANE];

/// The YAML documents of every `.yaml` file in `dir`, files in name order.
fn documents_in(dir: &Path) -> anyhow::Result<Vec<Value>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)?.filter_map(Result::ok).map(|e| e.path()).collect();
    files.sort();
    let mut docs = Vec::new();
    for file in files.iter().filter(|f| f.extension().is_some_and(|e| e == "yaml")) {
        docs.extend(documents(&std::fs::read_to_string(file)?)?);
    }
    Ok(docs)
}

/// Installs Cluster API's CRDs (as they ship, without conversion webhooks: the suites write
/// v1beta2, the storage version, so nothing needs converting).
pub async fn install_crds(client: &kube::Client) -> anyhow::Result<Vec<String>> {
    let root = module_dir("capi");
    let mut names = Vec::new();
    for provider in PROVIDERS {
        let docs = documents_in(&root.join(provider.dir).join("config/crd/bases"))?;
        for crd in apply_all(client, &docs, None, false).await? {
            names.extend(crd.metadata.name);
        }
    }
    wait_established(client, &names).await?;
    Ok(names)
}

/// Installs one provider as its release would be, for its manager running at `webhook_base`
/// (`https://127.0.0.1:<port>`, serving a certificate signed by `ca_pem`): its CRDs with the
/// provider label, the contract labels where its kustomization adds them, and conversion by
/// webhook at `<webhook_base>/convert`; and its admission webhook configurations, renamed per
/// provider, with each service reference replaced by `<webhook_base><path>` and the CA bundle
/// (what CAPI's internal/test/envtest does). Returns the CRD names.
pub async fn install_provider(client: &kube::Client, provider: Provider, webhook_base: &str, ca_pem: &str) -> anyhow::Result<Vec<String>> {
    let root = module_dir("capi").join(provider.dir).join("config");
    let ca_bundle = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let client_config = |path: &str| json!({"url": format!("{webhook_base}{path}"), "caBundle": ca_bundle});

    let mut crds = documents_in(&root.join("crd/bases"))?;
    for crd in &mut crds {
        let labels = &mut crd["metadata"]["labels"];
        labels["cluster.x-k8s.io/provider"] = json!(provider.label);
        if provider.contract_labels {
            labels["cluster.x-k8s.io/v1beta1"] = json!("v1beta1");
            labels["cluster.x-k8s.io/v1beta2"] = json!("v1beta2");
        }
        crd["spec"]["conversion"] = json!({
            "strategy": "Webhook",
            "webhook": {"conversionReviewVersions": ["v1"], "clientConfig": client_config("/convert")}
        });
    }
    let mut names = Vec::new();
    for crd in apply_all(client, &crds, None, false).await? {
        names.extend(crd.metadata.name);
    }
    wait_established(client, &names).await?;

    let mut configurations = documents(&std::fs::read_to_string(root.join("webhook/manifests.yaml"))?)?;
    for configuration in &mut configurations {
        let name = configuration["metadata"]["name"].as_str().unwrap_or_default();
        configuration["metadata"]["name"] = json!(format!("{name}-{}", provider.tag));
        configuration["metadata"]["labels"]["cluster.x-k8s.io/provider"] = json!(provider.label);
        for webhook in configuration["webhooks"].as_array_mut().into_iter().flatten() {
            let path = webhook["clientConfig"]["service"]["path"].as_str().unwrap_or("/").to_string();
            webhook["clientConfig"] = client_config(&path);
        }
    }
    apply_all(client, &configurations, None, false).await?;
    Ok(names)
}

/// cert-manager cannot run here (no images), but clusterctl's components carry its Issuer and
/// Certificate objects. Serving its two kinds as schemaless CRDs lets the API server store them
/// (what `clusterctl init` with `cert-manager.externallyProvisioned` expects); certificates are
/// then issued by the harness itself.
pub async fn install_cert_manager_kinds(client: &kube::Client) -> anyhow::Result<()> {
    let mut docs = Vec::new();
    for (kind, plural) in [("Issuer", "issuers"), ("Certificate", "certificates")] {
        docs.push(serde_json::json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("{plural}.cert-manager.io")},
            "spec": {
                "group": "cert-manager.io",
                "scope": "Namespaced",
                "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase(), "listKind": format!("{kind}List")},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]
            }
        }));
    }
    apply_all(client, &docs, None, false).await?;
    wait_established(client, &["issuers.cert-manager.io".into(), "certificates.cert-manager.io".into()]).await
}

/// Installs capssh's own CRDs from config/crd/bases.
pub async fn install_capssh_crds(client: &kube::Client) -> anyhow::Result<()> {
    let docs = documents_in(&crate::tools::repo_root().join("config/crd/bases"))?;
    let mut names = Vec::new();
    for crd in apply_all(client, &docs, None, false).await? {
        names.extend(crd.metadata.name);
    }
    wait_established(client, &names).await
}
