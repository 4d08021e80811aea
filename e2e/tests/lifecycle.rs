//! The full lifecycle with real Cluster API on real kubeadm nodes, the README's main job
//! (`make e2e`), on the default flavor users get (`templates/cluster-template.yaml`: kube-vip
//! holding the control-plane VIP) with a highly available control plane:
//!
//! 1. create a cluster (3 control-plane machines by KubeadmControlPlane, 1 worker by a
//!    MachineDeployment) from `clusterctl generate cluster` on bare Debian nodes that capssh
//!    prepares from an artifact mirror, pulling the rest from a registry mirror (TLS, basic auth);
//!    what the sandbox needs beyond a real host is laid over the rendered flavor
//!    ([`capssh_e2e::sandbox`]); its CNI (kube-router) comes by ClusterResourceSet; the nodes
//!    are Ready and the cluster runs workloads ([`check_workloads`]: kube-proxy, CoreDNS,
//!    Pod-to-Pod and Service traffic across nodes, DNS, logs and exec);
//! 2. scale the MachineDeployment 1 → 3 (workloads checked on the 6 nodes; Kubernetes
//!    conformance tests run there, a sample or all of them: [`conformance::focus_from_env`]) → 1:
//!    released hosts are reset and Available, and their kubeadm state is gone;
//! 3. roll both to the next Kubernetes patch (with new SSHMachineTemplates pinning its mirror's
//!    SHA256SUMS): KCP replaces the three control-plane machines, and with them the three etcd
//!    members, one by one; the VIP moves off each host that goes; every node ends on the new
//!    version, kube-proxy too, and workloads are checked again;
//! 4. delete the cluster: every host Available and clean, nothing left behind.
//!
//! Everything is real: etcd + kube-apiserver, Cluster API's core/CABPK/KCP managers with their
//! webhooks, clusterctl, capssh's manager, systemd nodes running containerd, kubelet and kubeadm.
//! Logs of every controller and every node's journal and capssh job logs stay in
//! `_artifacts/e2e/lifecycle-<pid>/`.

use capssh_e2e::addon_images::serve_addons;
use capssh_e2e::apply::{apply_all, documents};
use capssh_e2e::capi::install_capssh_crds;
use capssh_e2e::capi_managers::CapiManagers;
use capssh_e2e::clusterctl::LocalRepository;
use capssh_e2e::conformance;
use capssh_e2e::manager::start_manager;
use capssh_e2e::mgmt::ManagementPlane;
use capssh_e2e::mirror::{MirrorServer, build_mirror};
use capssh_e2e::nodes::{GATEWAY, NodeFarm, VIRTUAL_IP};
use capssh_e2e::registry::Registry;
use capssh_e2e::sandbox::{SandboxSettings, adapt};
use capssh_e2e::scenario::{namespace, register_nodes};
use capssh_e2e::tools::{artifacts_dir, repo_root};
use capssh_e2e::workload::*;
use capssh_e2e::workload_checks::check_workloads;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use serde_json::json;

const SUITE: &str = "lifecycle";
const NS: &str = "lifecycle";
const NAME: &str = "sandbox";
const FIRST: &str = "v1.36.3";
const NEXT: &str = "v1.36.4";
/// 3 control planes and up to 3 workers; a rollout's extra machine fits in the same 6.
const NODES: usize = 6;
const CONTROL_PLANES: usize = 3;
const REGISTRY_CA: &str = "registry-ca";
const REGISTRY_CREDENTIALS: &str = "registry-pull";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_lifecycle_on_kubeadm_nodes() -> anyhow::Result<()> {
    let mut timeline = Timeline::start();
    let work = artifacts_dir(SUITE);
    let plane = ManagementPlane::start(SUITE).await?;
    let client = plane.client().await?;
    let capi = CapiManagers::start(&plane, SUITE).await?;
    install_capssh_crds(&client).await?;
    let _capssh = start_manager(&plane, "capssh", &[])?;
    timeline.mark("management plane, Cluster API and capssh up");

    let nodes = NodeFarm::start(SUITE, NODES)?;
    namespace(&client, NS).await?;
    register_nodes(&client, NS, &nodes, json!({"role": "kubeadm"})).await?;
    timeline.mark(&format!("{NODES} bare Debian nodes booted and registered"));

    let mirror_root = work.join("mirror");
    let mirrors = (build_mirror(&mirror_root, FIRST)?, build_mirror(&mirror_root, NEXT)?);
    // On the node network's gateway (it exists once the nodes do).
    let mirror = MirrorServer::start(&mirror_root, (GATEWAY, 0).into())?;
    timeline.mark(&format!("artifact mirror for {FIRST} and {NEXT}"));

    // The registry mirror of registry.k8s.io and docker.io, and the CNI's ClusterResourceSet.
    let registry = Registry::start_on(&work.join("registry"), GATEWAY)?;
    let pushed = serve_addons(&registry, &[FIRST, NEXT])?;
    apply_all(&client, &registry.pull_objects(REGISTRY_CA, REGISTRY_CREDENTIALS)?, Some(NS), false).await?;
    let cni = std::fs::read_to_string(repo_root().join("templates/addons/cni-kube-router.yaml"))?;
    apply_all(&client, &documents(&cni)?, Some(NS), false).await?;
    eprintln!("registry mirror at {} serves {}", registry.address, pushed.join(", "));
    timeline.mark(&format!("registry mirror with {} add-on images", pushed.len()));

    // 1. Create, from the default flavor.
    let repo = LocalRepository::publish(&work)?;
    let provider = format!("ssh:{}", repo.version);
    let control_planes = CONTROL_PLANES.to_string();
    let rendered = repo
        .run(
            &[
                "generate",
                "cluster",
                NAME,
                "--infrastructure",
                &provider,
                "--target-namespace",
                NS,
                "--kubernetes-version",
                FIRST,
                "--control-plane-machine-count",
                &control_planes,
                "--worker-machine-count",
                "1",
            ],
            &[
                ("SSH_CONTROL_PLANE_ENDPOINT_HOST", &VIRTUAL_IP.to_string()),
                ("SSH_KUBE_VIP_INTERFACE", "eth0"),
                ("SSH_CONTROL_PLANE_HOST_ROLE", "kubeadm"),
                ("SSH_WORKER_HOST_ROLE", "kubeadm"),
                // The test network's own range.
                ("SSH_POD_CIDR", "198.19.0.0/17"),
                ("SSH_SERVICE_CIDR", "198.19.240.0/20"),
            ],
        )
        .map_err(anyhow::Error::msg)?;
    let mut documents = documents(&rendered)?;
    adapt(
        &mut documents,
        &SandboxSettings {
            artifacts_url: mirror.url(),
            artifacts_checksums_sha256: mirrors.0.sums_sha256.clone(),
            registry_endpoint: format!("https://{}", registry.address),
            registry_ca_config_map: REGISTRY_CA.into(),
            registry_credentials_secret: REGISTRY_CREDENTIALS.into(),
        },
    )?;
    std::fs::write(work.join("cluster.json"), serde_json::to_vec_pretty(&documents)?)?;
    apply_all(&client, &documents, Some(NS), false).await?;
    let workload = Workload::wait_from_secret(&client, NS, NAME, &work, 5).await?;
    wait_cluster(&client, NS, &workload, CONTROL_PLANES + 1, FIRST, 25).await.inspect_err(|_| describe(&repo, &plane))?;
    timeline.mark("create: 3 control planes (kube-vip) + 1 worker Running, nodes Ready");
    describe(&repo, &plane);
    check_workloads(&workload, CONTROL_PLANES + 1).await?;
    timeline.mark("create: add-ons up, Pod and Service traffic across nodes, DNS, logs, exec");

    // 2. Scale the workers 1 → 3 → 1.
    scale_machine_deployment(&client, NS, &format!("{NAME}-md-0"), 3).await?;
    wait_cluster(&client, NS, &workload, CONTROL_PLANES + 3, FIRST, 15).await?;
    timeline.mark("scale workers 1 -> 3");
    check_workloads(&workload, CONTROL_PLANES + 3).await?;
    timeline.mark("scaled: workloads on all 6 nodes");
    if let Some(focus) = conformance::focus_from_env()? {
        let summary = conformance::run(&workload.kubeconfig, &focus, &work.join("conformance"))?;
        eprintln!("{summary}");
        timeline.mark(&format!("conformance: {} passed, {} failed, {} skipped", summary.passed, summary.failed.len(), summary.skipped));
        anyhow::ensure!(summary.failed.is_empty(), "conformance tests failed: {:?}", summary.failed);
    }
    let before = claimed_hosts(&client, NS).await?;
    scale_machine_deployment(&client, NS, &format!("{NAME}-md-0"), 1).await?;
    wait_cluster(&client, NS, &workload, CONTROL_PLANES + 1, FIRST, 15).await?;
    let released: Vec<String> = wait_for(10, "two released hosts Available", || async {
        let hosts = list(&client, NS, SSH_HOST).await?;
        let released: Vec<String> = before
            .iter()
            .filter(|name| {
                hosts.iter().any(|h| {
                    h.metadata.name.as_ref() == Some(name) && text(h, "/status/phase") == "Available" && h.data.pointer("/spec/consumerRef").is_none()
                })
            })
            .cloned()
            .collect();
        Ok(if released.len() == 2 { Ok(released) } else { Err(format!("released so far: {released:?}")) })
    })
    .await?;
    for host in &released {
        assert_clean(&nodes, host)?;
    }
    timeline.mark("scale workers 3 -> 1 (released hosts reset, Available)");

    // 3. Rolling upgrade to the next patch, from templates that pin its SHA256SUMS.
    let vip_holder_before = vip_holder(&workload)?;
    let control_plane_nodes_before = control_plane_nodes(&workload)?;
    assert!(control_plane_nodes_before.iter().any(|(name, _)| *name == vip_holder_before), "{vip_holder_before} holds the VIP, no control plane");
    let patches = PatchParams::default();
    let (control_plane, workers) = (format!("{NAME}-control-plane"), format!("{NAME}-md-0"));
    let control_plane_next = pinned_copy(&client, NS, &control_plane, NEXT, &mirrors.1.sums_sha256).await?;
    let workers_next = pinned_copy(&client, NS, &workers, NEXT, &mirrors.1.sums_sha256).await?;
    kind_api(&client, KUBEADM_CONTROL_PLANE)
        .patch(
            &control_plane,
            &patches,
            &Patch::Merge(json!({"spec": {"version": NEXT, "machineTemplate": {"spec": {"infrastructureRef": {"name": control_plane_next}}}}})),
        )
        .await?;
    kind_api(&client, MACHINE_DEPLOYMENT)
        .patch(
            &workers,
            &patches,
            &Patch::Merge(json!({"spec": {"template": {"spec": {"version": NEXT, "infrastructureRef": {"name": workers_next}}}}})),
        )
        .await?;
    wait_cluster(&client, NS, &workload, CONTROL_PLANES + 1, NEXT, 40).await.inspect_err(|_| describe(&repo, &plane))?;
    timeline.mark(&format!("rolling upgrade {FIRST} -> {NEXT}"));
    describe(&repo, &plane);
    let proxy_image =
        workload.kubectl(&["get", "daemonset", "kube-proxy", "-n", "kube-system", "-o", "jsonpath={.spec.template.spec.containers[0].image}"])?;
    assert!(proxy_image.ends_with(&format!(":{NEXT}")), "kube-proxy still runs {proxy_image}");
    let control_plane_nodes_after = control_plane_nodes(&workload)?;
    assert_eq!(control_plane_nodes_after.len(), CONTROL_PLANES, "{control_plane_nodes_after:?}");
    assert!(
        control_plane_nodes_after.iter().all(|(_, uid)| control_plane_nodes_before.iter().all(|(_, old)| old != uid)),
        "every control-plane node is replaced: before {control_plane_nodes_before:?}, after {control_plane_nodes_after:?}"
    );
    let names_after: Vec<String> = control_plane_nodes_after.iter().map(|(name, _)| name.clone()).collect();
    // A deleted node's mirror Pods stay until the Pod garbage collector's quarantine ends (40 s).
    wait_for(3, "one Ready etcd member on each new control-plane node", || async {
        let etcd = etcd_member_nodes(&workload)?;
        Ok(if etcd == names_after { Ok(()) } else { Err(format!("etcd Pods Ready on {etcd:?}, control planes {names_after:?}")) })
    })
    .await?;
    // Every node that could hold the VIP before is gone, so the lease has moved to a new one.
    let vip_holder_after = vip_holder(&workload)?;
    assert!(names_after.contains(&vip_holder_after), "the VIP moved with the control plane: {vip_holder_before} -> {vip_holder_after}");
    check_workloads(&workload, CONTROL_PLANES + 1).await?;
    timeline.mark("upgraded: workloads checked again");

    // 4. Delete.
    kind_api(&client, CLUSTER).delete(NAME, &DeleteParams::default()).await?;
    wait_for(15, "the cluster to be gone and every host Available", || async {
        let (clusters, machines, ssh_machines) =
            (list(&client, NS, CLUSTER).await?, list(&client, NS, MACHINE).await?, list(&client, NS, SSH_MACHINE).await?);
        let busy = busy_hosts(&client, NS).await?;
        Ok(if clusters.is_empty() && machines.is_empty() && ssh_machines.is_empty() && busy.is_empty() {
            Ok(())
        } else {
            Err(format!("{} clusters, {} machines, {} sshmachines, busy hosts {busy:?}", clusters.len(), machines.len(), ssh_machines.len()))
        })
    })
    .await?;
    for node in &nodes.nodes {
        assert_clean(&nodes, &node.name)?;
    }
    let hosts = list(&client, NS, SSH_HOST).await?;
    for host in &hosts {
        // Only capssh's own SSHHost finalizer, which holds a deletion while the host is claimed.
        let mut finalizers = host.metadata.finalizers.clone().unwrap_or_default();
        finalizers.retain(|f| f != capssh::controllers::sshhost::FINALIZER);
        assert!(finalizers.is_empty(), "{:?} keeps finalizers {finalizers:?}", host.metadata.name);
    }
    timeline.mark("delete: cluster gone, every host Available and clean");

    let table = timeline.render();
    std::fs::write(work.join("timeline.txt"), &table)?;
    eprintln!("\n{table}\nartifacts (controller logs, node journals, capssh job logs): {}", work.display());
    drop(capi);
    Ok(())
}

/// The node holding kube-vip's control-plane lease, so the VIP: its host answers ARP for it.
fn vip_holder(workload: &Workload) -> anyhow::Result<String> {
    let holder = workload.kubectl(&["get", "lease", "plndr-cp-lock", "-n", "kube-system", "-o", "jsonpath={.spec.holderIdentity}"])?;
    anyhow::ensure!(!holder.is_empty(), "nobody holds kube-vip's lease");
    Ok(holder)
}

/// The control-plane nodes, (name, UID) sorted by name. A host can come back as a new node
/// under its old name (reset, then claimed again): the UID tells the nodes apart.
fn control_plane_nodes(workload: &Workload) -> anyhow::Result<Vec<(String, String)>> {
    let listed = workload.kubectl(&[
        "get",
        "nodes",
        "-l",
        "node-role.kubernetes.io/control-plane",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.metadata.uid}{\"\\n\"}{end}",
    ])?;
    let mut nodes: Vec<(String, String)> =
        listed.lines().filter_map(|l| l.split_once(' ')).map(|(name, uid)| (name.to_string(), uid.to_string())).collect();
    nodes.sort();
    Ok(nodes)
}

/// The nodes of the Ready etcd members (kubeadm's static Pods), sorted.
fn etcd_member_nodes(workload: &Workload) -> anyhow::Result<Vec<String>> {
    let pods: serde_json::Value =
        serde_json::from_str(&workload.kubectl(&["get", "pods", "-n", "kube-system", "-l", "component=etcd", "-o", "json"])?)?;
    let mut nodes: Vec<String> = pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["status"]["conditions"].as_array().into_iter().flatten().any(|c| c["type"] == "Ready" && c["status"] == "True"))
        .filter_map(|p| p["spec"]["nodeName"].as_str().map(str::to_string))
        .collect();
    nodes.sort();
    Ok(nodes)
}

fn kind_api(client: &kube::Client, kind: (&str, &str, &str)) -> Api<DynamicObject> {
    api(client, NS, kind)
}

fn describe(repo: &LocalRepository, plane: &ManagementPlane) {
    let kubeconfig = plane.kubeconfig.to_string_lossy().to_string();
    match repo.run(&["describe", "cluster", NAME, "-n", NS, "--kubeconfig", &kubeconfig, "--grouping=false"], &[]) {
        Ok(out) => eprintln!("clusterctl describe cluster {NAME}:\n{out}"),
        Err(err) => eprintln!("clusterctl describe failed: {err}"),
    }
}
