//! Server-side apply of YAML documents, resolving kinds through discovery.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::Scope;
use std::time::{Duration, Instant};

/// Field manager of everything the harness applies.
pub const FIELD_MANAGER: &str = "capssh-e2e";

/// Parses a multi-document YAML string into JSON values (empty documents dropped).
pub fn documents(yaml: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(yaml)?;
    Ok(docs.into_iter().filter(|doc| !doc.is_null()).collect())
}

/// Applies every document; `namespace` is used for namespaced objects that name none.
/// With `dry_run`, the API server validates and admits but stores nothing.
pub async fn apply_all(
    client: &kube::Client,
    docs: &[serde_json::Value],
    namespace: Option<&str>,
    dry_run: bool,
) -> anyhow::Result<Vec<DynamicObject>> {
    let mut applied = Vec::new();
    for doc in docs {
        applied.push(apply_one(client, doc, namespace, dry_run).await?);
    }
    Ok(applied)
}

pub async fn apply_one(client: &kube::Client, doc: &serde_json::Value, namespace: Option<&str>, dry_run: bool) -> anyhow::Result<DynamicObject> {
    let obj: DynamicObject = serde_json::from_value(doc.clone())?;
    let types = obj.types.clone().ok_or_else(|| anyhow::anyhow!("document without apiVersion/kind"))?;
    let gvk = GroupVersionKind::try_from(&types)?;
    let (resource, caps) = kube::discovery::pinned_kind(client, &gvk).await?;
    let name = obj.metadata.name.clone().ok_or_else(|| anyhow::anyhow!("{} without a name", types.kind))?;
    let api: Api<DynamicObject> = match caps.scope {
        Scope::Cluster => Api::all_with(client.clone(), &resource),
        Scope::Namespaced => {
            let ns = obj.metadata.namespace.as_deref().or(namespace).unwrap_or("default");
            Api::namespaced_with(client.clone(), ns, &resource)
        }
    };
    let mut params = PatchParams::apply(FIELD_MANAGER).force();
    params.dry_run = dry_run;
    api.patch(&name, &params, &Patch::Apply(doc)).await.map_err(|err| anyhow::anyhow!("applying {} {name}: {err}", types.kind))
}

/// Waits until every named CRD is Established (its kinds can be served).
pub async fn wait_established(client: &kube::Client, names: &[String]) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    for name in names {
        loop {
            let crd = api.get(name).await?;
            let established =
                crd.status.and_then(|s| s.conditions).unwrap_or_default().iter().any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "CRD {name} not established after 60s");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}
