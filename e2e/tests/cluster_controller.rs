//! The SSHCluster controller against a real kube-apiserver with Cluster API's CRDs; the test
//! plays Cluster API (creates the Cluster and sets the owner reference).

use capssh::api::v1alpha1::{ConditionStatus, SSHCluster};
use capssh_e2e::apply::apply_one;
use capssh_e2e::capi::{install_capssh_crds, install_crds};
use capssh_e2e::manager::{eventually, start_manager};
use capssh_e2e::mgmt::ManagementPlane;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::json;

const NS: &str = "default";

async fn sshcluster(api: &Api<SSHCluster>, name: &str) -> Option<SSHCluster> {
    api.get(name).await.ok()
}

fn condition(cluster: &SSHCluster, kind: &str) -> Option<(ConditionStatus, String)> {
    cluster.status.as_ref()?.conditions.iter().find(|c| c.r#type == kind).map(|c| (c.status, c.reason.clone()))
}

#[tokio::test]
async fn endpoint_failure_domains_and_pause() {
    let plane = ManagementPlane::start("cluster-controller").await.unwrap();
    let client = plane.client().await.unwrap();
    install_crds(&client).await.unwrap();
    install_capssh_crds(&client).await.unwrap();
    let _manager = start_manager(&plane, "capssh", &[]).unwrap();

    // Hosts in two racks (loopback addresses: their probes fail locally, labels are what counts).
    for (name, rack) in [("h1", "rack-a"), ("h2", "rack-a"), ("h3", "rack-b")] {
        let host = json!({
            "apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "SSHHost",
            "metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": rack}},
            "spec": {"address": "127.0.0.1", "port": 1, "auth": {"privateKeySecretRef": {"name": "none"}}, "hostKey": {"trustOnFirstUse": true}}
        });
        apply_one(&client, &host, Some(NS), false).await.unwrap();
    }

    for (name, endpoint) in [("with-endpoint", Some(json!({"host": "198.18.0.100", "port": 6443}))), ("without", None)] {
        let cluster = apply_one(
            &client,
            &json!({
                "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
                "metadata": {"name": name},
                "spec": {"infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "SSHCluster", "name": name}}
            }),
            Some(NS),
            false,
        )
        .await
        .unwrap();
        let mut spec = json!({"failureDomains": {"hostLabel": "topology.kubernetes.io/zone", "controlPlane": ["rack-a"]}});
        if let Some(endpoint) = endpoint {
            spec["controlPlaneEndpoint"] = endpoint;
        }
        apply_one(
            &client,
            &json!({
                "apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "SSHCluster",
                "metadata": {"name": name, "ownerReferences": [{
                    "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster", "name": name, "uid": cluster.metadata.uid
                }]},
                "spec": spec
            }),
            Some(NS),
            false,
        )
        .await
        .unwrap();
    }

    let api: Api<SSHCluster> = Api::namespaced(client.clone(), NS);
    let ready = eventually(60, "the SSHCluster to be provisioned", || async {
        let c = sshcluster(&api, "with-endpoint").await?;
        (c.status.as_ref()?.initialization.as_ref()?.provisioned == Some(true)).then_some(c)
    })
    .await
    .unwrap();
    let domains: Vec<(String, Option<bool>)> = ready.status.unwrap().failure_domains.into_iter().map(|d| (d.name, d.control_plane)).collect();
    assert_eq!(domains, vec![("rack-a".to_string(), Some(true)), ("rack-b".to_string(), Some(false))]);

    // No endpoint anywhere: waits, and says what to set. Setting the Cluster's completes it.
    let waiting = eventually(60, "the endpoint-less SSHCluster to wait", || async {
        let c = sshcluster(&api, "without").await?;
        (condition(&c, "Ready")?.1 == "WaitingForControlPlaneEndpoint").then_some(())
    })
    .await;
    waiting.unwrap();
    let clusters = Api::<DynamicObject>::namespaced_with(client.clone(), NS, &capssh::controllers::capi::cluster_resource());
    let endpoint = json!({"spec": {"controlPlaneEndpoint": {"host": "198.18.0.101", "port": 6443}}});
    clusters.patch("without", &PatchParams::default(), &Patch::Merge(endpoint)).await.unwrap();
    eventually(60, "the Cluster's endpoint to be accepted", || async {
        let c = sshcluster(&api, "without").await?;
        (c.status.as_ref()?.initialization.as_ref()?.provisioned == Some(true)).then_some(())
    })
    .await
    .unwrap();

    // Pausing the Cluster is reflected in the Paused condition, and unpausing clears it.
    clusters.patch("with-endpoint", &PatchParams::default(), &Patch::Merge(json!({"spec": {"paused": true}}))).await.unwrap();
    eventually(60, "Paused=True", || async {
        let c = sshcluster(&api, "with-endpoint").await?;
        (condition(&c, "Paused")? == (ConditionStatus::True, "Paused".to_string())).then_some(())
    })
    .await
    .unwrap();
    clusters.patch("with-endpoint", &PatchParams::default(), &Patch::Merge(json!({"spec": {"paused": false}}))).await.unwrap();
    eventually(60, "Paused=False", || async {
        let c = sshcluster(&api, "with-endpoint").await?;
        (condition(&c, "Paused")?.0 == ConditionStatus::False).then_some(())
    })
    .await
    .unwrap();
}
