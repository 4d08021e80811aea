//! Watch caches the reconciles read instead of asking the API server each time: Cluster API's
//! Clusters and Machines, the SSHClusters, and the two kinds of Secret capssh reads (a host's
//! credentials, a Machine's bootstrap data). A miss — the cache not synced yet, an object just
//! created, a Secret without the label the cache selects on — is a GET, so a cache never answers
//! "does not exist".
//!
//! Staleness: the stores of Clusters, Machines and bootstrap Secrets are filled by the very
//! streams that wake the SSHMachine controller for them, before they wake it; a reconcile that
//! read a copy older than the API server's is therefore woken again with the newer one. The
//! decisions a stale copy could get wrong for good read the API server instead: the claim and
//! the delete path check the Cluster's pause on a fresh read (see `sshmachine`).

use super::capi::{CLUSTER_NAME_LABEL, cluster_resource, machine_resource};
use crate::api::v1alpha1::{CREDENTIALS_LABEL, SSHCluster};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::Resource;
use kube::api::{Api, DynamicObject};
use kube::runtime::reflector::{ObjectRef, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Arc, OnceLock};

/// The Secrets the credentials cache holds: only those marked for capssh (the others are
/// refused anyway, see `credentials`).
pub fn credentials_selector() -> watcher::Config {
    watcher::Config::default().labels(&format!("{CREDENTIALS_LABEL}=true"))
}

/// The Secrets the bootstrap-data cache holds: what Cluster API's bootstrap providers write
/// (CABPK: type `cluster.x-k8s.io/secret`, labelled with the cluster's name). A provider that
/// writes them otherwise costs a GET per read, nothing else.
pub fn bootstrap_data_selector() -> watcher::Config {
    watcher::Config::default().labels(CLUSTER_NAME_LABEL).fields("type=cluster.x-k8s.io/secret")
}

#[derive(Default)]
pub struct Caches {
    /// Cluster API Clusters (the SSHMachine controller's watch of them).
    pub clusters: OnceLock<Store<DynamicObject>>,
    /// Cluster API Machines, the SSHMachines' owners (the SSHMachine controller's watch).
    pub machines: OnceLock<Store<DynamicObject>>,
    /// SSHClusters (the SSHCluster controller's own store).
    pub ssh_clusters: OnceLock<Store<SSHCluster>>,
    /// Secrets selected by [`credentials_selector`].
    pub credentials: OnceLock<Store<Secret>>,
    /// Secrets selected by [`bootstrap_data_selector`].
    pub bootstrap_data: OnceLock<Store<Secret>>,
}

impl Caches {
    pub async fn cluster(&self, client: &kube::Client, namespace: &str, name: &str) -> Result<Option<Arc<DynamicObject>>, kube::Error> {
        let api = Api::namespaced_with(client.clone(), namespace, &cluster_resource());
        read(self.clusters.get(), &api, ObjectRef::new_with(name, cluster_resource()).within(namespace)).await
    }

    pub async fn machine(&self, client: &kube::Client, namespace: &str, name: &str) -> Result<Option<Arc<DynamicObject>>, kube::Error> {
        let api = Api::namespaced_with(client.clone(), namespace, &machine_resource());
        read(self.machines.get(), &api, ObjectRef::new_with(name, machine_resource()).within(namespace)).await
    }

    pub async fn ssh_cluster(&self, client: &kube::Client, namespace: &str, name: &str) -> Result<Option<Arc<SSHCluster>>, kube::Error> {
        read(self.ssh_clusters.get(), &Api::namespaced(client.clone(), namespace), ObjectRef::new(name).within(namespace)).await
    }

    pub async fn credentials(&self, client: &kube::Client, namespace: &str, name: &str) -> Result<Option<Arc<Secret>>, kube::Error> {
        read(self.credentials.get(), &Api::namespaced(client.clone(), namespace), ObjectRef::new(name).within(namespace)).await
    }

    pub async fn bootstrap_data(&self, client: &kube::Client, namespace: &str, name: &str) -> Result<Option<Arc<Secret>>, kube::Error> {
        read(self.bootstrap_data.get(), &Api::namespaced(client.clone(), namespace), ObjectRef::new(name).within(namespace)).await
    }
}

/// The cached copy, else the API server's.
async fn read<K>(store: Option<&Store<K>>, api: &Api<K>, key: ObjectRef<K>) -> Result<Option<Arc<K>>, kube::Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + Debug + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    if let Some(cached) = store.and_then(|store| store.get(&key)) {
        return Ok(Some(cached));
    }
    Ok(api.get_opt(&key.name).await?.map(Arc::new))
}

/// A watch that fills `writer` and then passes each object on (to wake a controller). The
/// objects are kept without their managedFields: never read, and often half of a small object.
pub fn reflected<K>(api: Api<K>, config: watcher::Config, writer: Writer<K>) -> impl Stream<Item = Result<K, watcher::Error>> + Send
where
    K: Resource + Clone + serde::de::DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    watcher(api, config).modify(|obj: &mut K| obj.meta_mut().managed_fields = None).reflect(writer).touched_objects()
}

/// Keeps `writer`'s store filled for as long as the process runs (a cache nothing is woken by).
pub async fn fill<K>(api: Api<K>, config: watcher::Config, writer: Writer<K>) -> anyhow::Result<()>
where
    K: Resource + Clone + serde::de::DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    reflected(api, config, writer)
        .default_backoff()
        .for_each(|event| async move {
            if let Err(err) = event {
                tracing::debug!(error = %err, "cache watch");
            }
        })
        .await;
    anyhow::bail!("a cache's watch stopped")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_only_watched_through_a_label_selector() {
        // RBAC grants list/watch on every Secret; only these selectors keep the others out.
        let credentials = credentials_selector();
        assert_eq!(credentials.label_selector.as_deref(), Some("infrastructure.cluster.x-k8s.io/capssh-credentials=true"));
        let bootstrap = bootstrap_data_selector();
        assert_eq!(bootstrap.label_selector.as_deref(), Some("cluster.x-k8s.io/cluster-name"));
        assert_eq!(bootstrap.field_selector.as_deref(), Some("type=cluster.x-k8s.io/secret"));
    }
}
