//! Cluster API's own manifests, from the Go module pinned in hack/tools/capi.

use crate::apply::{apply_all, documents, wait_established};
use crate::tools::module_dir;

/// The folders of Cluster API's CRDs: core, kubeadm bootstrap, kubeadm control plane.
const CRD_DIRS: [&str; 3] = ["core/config/crd/bases", "bootstrap/kubeadm/config/crd/bases", "controlplane/kubeadm/config/crd/bases"];

/// Installs Cluster API's CRDs (as they ship, without conversion webhooks: the suites write
/// v1beta2, the storage version, so nothing needs converting).
pub async fn install_crds(client: &kube::Client) -> anyhow::Result<Vec<String>> {
    let root = module_dir("capi");
    let mut names = Vec::new();
    for dir in CRD_DIRS {
        let mut files: Vec<_> = std::fs::read_dir(root.join(dir))?.filter_map(Result::ok).map(|e| e.path()).collect();
        files.sort();
        for file in files.iter().filter(|f| f.extension().is_some_and(|e| e == "yaml")) {
            let docs = documents(&std::fs::read_to_string(file)?)?;
            for crd in apply_all(client, &docs, None, false).await? {
                names.extend(crd.metadata.name);
            }
        }
    }
    wait_established(client, &names).await?;
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
    let dir = crate::tools::repo_root().join("config/crd/bases");
    let mut files: Vec<_> = std::fs::read_dir(&dir)?.filter_map(Result::ok).map(|e| e.path()).collect();
    files.sort();
    let mut names = Vec::new();
    for file in files {
        let docs = documents(&std::fs::read_to_string(&file)?)?;
        for crd in apply_all(client, &docs, None, false).await? {
            names.extend(crd.metadata.name);
        }
    }
    wait_established(client, &names).await
}
