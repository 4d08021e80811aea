//! Cluster API's real managers run beside capssh's: a cluster rendered by clusterctl from our
//! external-lb flavor is defaulted and validated by Cluster API's webhooks, read back in
//! v1beta1 through its conversion webhooks, turned into Machines by KCP and the
//! MachineDeployment, given bootstrap data by CABPK, and deleted by cascade (the garbage
//! collector of a real kube-controller-manager). No SSH hosts: the SSHMachines wait for one.

use capssh_e2e::apply::{apply_all, apply_one, documents};
use capssh_e2e::capi::install_capssh_crds;
use capssh_e2e::capi_managers::CapiManagers;
use capssh_e2e::clusterctl::LocalRepository;
use capssh_e2e::manager::{eventually, start_manager};
use capssh_e2e::mgmt::ManagementPlane;
use capssh_e2e::scenario::namespace;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams};
use kube::core::GroupVersionKind;
use kube::discovery::ApiResource;
use serde_json::{Value, json};

const SUITE: &str = "capi-managers";
const NS: &str = "demo";
const CLUSTER: &str = "demo";

fn api(client: &kube::Client, group: &str, version: &str, kind: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), NS, &ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind)))
}

/// The cluster as `clusterctl generate cluster` renders our external-lb flavor: one control-plane
/// machine, one worker. The endpoint is a loopback port nothing listens on, so Cluster API's
/// attempts to reach the (absent) workload cluster fail at once and stay on this machine.
fn rendered_cluster(repo: &LocalRepository) -> Vec<Value> {
    let provider = format!("ssh:{}", repo.version);
    let rendered = repo
        .run(
            &[
                "generate",
                "cluster",
                CLUSTER,
                "--infrastructure",
                &provider,
                "--flavor",
                "external-lb",
                "--target-namespace",
                NS,
                "--kubernetes-version",
                "v1.36.3",
                "--control-plane-machine-count",
                "1",
                "--worker-machine-count",
                "1",
            ],
            &[("SSH_CONTROL_PLANE_ENDPOINT_HOST", "127.0.0.1"), ("SSH_CONTROL_PLANE_ENDPOINT_PORT", "1")],
        )
        .unwrap_or_else(|err| panic!("clusterctl generate cluster: {err}"));
    documents(&rendered).unwrap()
}

fn labels_of(obj: &DynamicObject) -> std::collections::BTreeMap<String, String> {
    obj.metadata.labels.clone().unwrap_or_default()
}

#[tokio::test]
async fn cluster_api_managers_reconcile_a_rendered_cluster() {
    let plane = ManagementPlane::start(SUITE).await.unwrap();
    let started = std::time::Instant::now();
    let capi = CapiManagers::start(&plane, SUITE).await.unwrap_or_else(|err| panic!("Cluster API managers: {err:#}"));
    eprintln!("Cluster API managers ready in {:?}; logs: {:?}", started.elapsed(), capi.logs());
    let client = plane.client().await.unwrap();
    install_capssh_crds(&client).await.unwrap();
    let _capssh = start_manager(&plane, "capssh", &[]).unwrap();
    let repo = LocalRepository::publish(&plane.dir).unwrap();

    namespace(&client, NS).await.unwrap();
    let rendered = rendered_cluster(&repo);
    let applied = apply_all(&client, &rendered, Some(NS), false).await.unwrap();

    // Mutating webhooks answered: the MachineDeployment's empty selector got the cluster label.
    let deployment = applied.iter().find(|o| o.types.as_ref().is_some_and(|t| t.kind == "MachineDeployment")).unwrap();
    assert_eq!(deployment.data["spec"]["selector"]["matchLabels"]["cluster.x-k8s.io/cluster-name"], CLUSTER, "{deployment:?}");

    // Validating webhooks answer too: KCP refuses an even number of stacked-etcd members.
    let mut even = rendered.iter().find(|d| d["kind"] == "KubeadmControlPlane").unwrap().clone();
    even["spec"]["replicas"] = json!(2);
    let refused = apply_one(&client, &even, Some(NS), true).await;
    let message = refused.expect_err("KCP's webhook refuses 2 replicas").to_string();
    assert!(message.contains("cannot be an even number when etcd is stacked"), "{message}");

    // KCP makes the first control-plane Machine and its KubeadmConfig.
    let machines = api(&client, "cluster.x-k8s.io", "v1beta2", "Machine");
    let control_plane = eventually(90, "KCP's first Machine", || async {
        let list = machines.list(&ListParams::default().labels("cluster.x-k8s.io/control-plane")).await.ok()?;
        list.items.into_iter().next()
    })
    .await
    .unwrap();
    assert_eq!(labels_of(&control_plane).get("cluster.x-k8s.io/cluster-name").map(String::as_str), Some(CLUSTER));
    let config_name = control_plane.data["spec"]["bootstrap"]["configRef"]["name"].as_str().unwrap().to_string();
    assert_eq!(control_plane.data["spec"]["bootstrap"]["configRef"]["kind"], "KubeadmConfig");
    let kubeadm_configs = api(&client, "bootstrap.cluster.x-k8s.io", "v1beta2", "KubeadmConfig");

    // CABPK renders its bootstrap data into a Secret with `format` and `value`.
    let secret_name = eventually(90, "CABPK's bootstrap data", || async {
        let config = kubeadm_configs.get(&config_name).await.ok()?;
        config.data["status"]["dataSecretName"].as_str().map(String::from)
    })
    .await
    .unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let data = secrets.get(&secret_name).await.unwrap().data.unwrap_or_default();
    assert_eq!(data.get("format").map(|f| f.0.as_slice()), Some(&b"cloud-config"[..]));
    let value = String::from_utf8(data["value"].0.clone()).unwrap();
    assert!(value.contains("kubeadm init"), "init data runs kubeadm init: {value}");

    // The MachineDeployment makes a MachineSet, which makes a Machine.
    let machine_sets = api(&client, "cluster.x-k8s.io", "v1beta2", "MachineSet");
    let deployment_label = format!("cluster.x-k8s.io/deployment-name={CLUSTER}-md-0");
    eventually(60, "the MachineSet", || async {
        machine_sets.list(&ListParams::default().labels(&deployment_label)).await.ok()?.items.into_iter().next()
    })
    .await
    .unwrap();
    let worker = eventually(90, "the MachineSet's Machine", || async {
        machines.list(&ListParams::default().labels(&deployment_label)).await.ok()?.items.into_iter().next()
    })
    .await
    .unwrap();
    assert_eq!(worker.data["spec"]["infrastructureRef"]["kind"], "SSHMachine");

    // Conversion webhooks: each provider's kinds read back in v1beta1, in that version's shape
    // (v1beta1 references carry an apiVersion, which conversion finds through our CRDs' contract
    // label; v1beta1 KubeadmConfig status has `ready`).
    let infrastructure_version = json!("infrastructure.cluster.x-k8s.io/v1alpha1");
    for (path, field, expected) in [
        (
            format!("/apis/cluster.x-k8s.io/v1beta1/namespaces/{NS}/clusters/{CLUSTER}"),
            "/spec/infrastructureRef/apiVersion",
            infrastructure_version.clone(),
        ),
        (
            format!("/apis/controlplane.cluster.x-k8s.io/v1beta1/namespaces/{NS}/kubeadmcontrolplanes/{CLUSTER}-control-plane"),
            "/spec/machineTemplate/infrastructureRef/apiVersion",
            infrastructure_version,
        ),
        (format!("/apis/bootstrap.cluster.x-k8s.io/v1beta1/namespaces/{NS}/kubeadmconfigs/{config_name}"), "/status/ready", json!(true)),
    ] {
        let request = http::Request::get(&path).body(Vec::new()).unwrap();
        let text = client.request_text(request).await.unwrap_or_else(|err| panic!("{path}: {err}"));
        let body: Value = serde_json::from_str(&text).unwrap();
        assert!(body["apiVersion"].as_str().unwrap().ends_with("/v1beta1"), "{path}: {body}");
        assert_eq!(body.pointer(field), Some(&expected), "{path} {field}: {body}");
    }

    // Deleting the Cluster takes everything with it: Cluster API deletes its descendants, and
    // the garbage collector what they own (the bootstrap data and the cluster's certificates:
    // no Cluster API controller deletes those itself).
    let cluster_secrets = ListParams::default().labels(&format!("cluster.x-k8s.io/cluster-name={CLUSTER}"));
    let owned: Vec<String> = secrets.list(&cluster_secrets).await.unwrap().items.into_iter().filter_map(|s| s.metadata.name).collect();
    assert!(owned.contains(&secret_name) && owned.contains(&format!("{CLUSTER}-ca")), "{owned:?}");
    let clusters = api(&client, "cluster.x-k8s.io", "v1beta2", "Cluster");
    clusters.delete(CLUSTER, &DeleteParams::default()).await.unwrap();
    eventually(90, "the Cluster and its Machines to be gone", || async {
        let cluster_gone = clusters.get_opt(CLUSTER).await.ok()?.is_none();
        let no_machines = machines.list(&ListParams::default()).await.ok()?.items.is_empty();
        (cluster_gone && no_machines).then_some(())
    })
    .await
    .unwrap();
    eventually(60, "the garbage collector to delete the owned Secrets", || async {
        secrets.list(&cluster_secrets).await.ok()?.items.is_empty().then_some(())
    })
    .await
    .unwrap();

    // And a namespace finishes deleting (the namespace controller empties it).
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces.delete(NS, &DeleteParams::default()).await.unwrap();
    eventually(60, "the namespace to be gone", || async { namespaces.get_opt(NS).await.ok()?.is_none().then_some(()) }).await.unwrap();
}
