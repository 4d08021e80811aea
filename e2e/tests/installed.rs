//! capssh installed as users install it, on a management cluster that capssh made, which then
//! becomes self-hosted and upgrades itself:
//!
//! 1. a bootstrap plane (the harness's API server; Cluster API and capssh installed by the real
//!    `clusterctl init`, their managers as processes) makes the management cluster on bare nodes
//!    (1 control plane behind kube-vip + 1 worker, kube-proxy, CoreDNS and the kube-router
//!    add-on), the way users bootstrap: a temporary management plane creates the permanent one;
//! 2. the real `clusterctl init --infrastructure ssh` installs cert-manager, Cluster API's core,
//!    kubeadm bootstrap and control-plane providers and capssh into it, from a local repository of
//!    the components as released, every image pulled from one registry (TLS, basic auth) through
//!    clusterctl's `images` setting: every provider runs as Pods, each Deployment Available, capssh
//!    under its own ServiceAccount, its webhook certificate issued and its CA injected by
//!    cert-manager;
//! 3. what capssh's Deployment promises: two replicas elect one leader (the Lease names a Pod);
//!    readiness is gated by the probe; `/metrics` answers through the Pod;
//! 4. from that cluster, `clusterctl generate cluster` makes a workload cluster on three more
//!    nodes; while a host job runs (preparation or bootstrap), the leader's Pod is deleted: the other replica takes over,
//!    the Deployment replaces the Pod, and the bootstrap finishes; then, with one replica, the
//!    workers scale 1 → 2 and the only Pod is deleted during the new worker's bootstrap: its
//!    replacement takes the lease and finishes it; the template webhook answers through its
//!    Service; the cluster is deleted and its hosts are reset and Available;
//! 5. capssh's logs are JSON lines, and none shows a request refused by RBAC (a 403);
//!    with `CAPSSH_E2E_CAPI_SPECS=<Ginkgo label filter>` (`make capi-e2e`), Cluster API's own e2e
//!    specs (e2e/capi) then run against this management cluster on the workload cluster's hosts
//!    ([`capi_specs`]);
//! 6. self-hosted, with `CAPSSH_E2E_SELF_HOSTED=1` (`make self-hosted`; too long for CI):
//!    `clusterctl move` of the management cluster's objects into itself; it scales its control
//!    plane 1 → 3 and its workers 1 → 2 → 1, then rolls both to the next Kubernetes patch while
//!    cert-manager, Cluster API and capssh run on the nodes being replaced (every provider Pod is
//!    rescheduled, capssh's leadership hands over); then `clusterctl move` back out. With
//!    `CAPSSH_E2E_SELF_HOSTED=sample` (`make test`, CI): the moves, and the workers 1 → 2 → 1;
//! 7. the bootstrap plane deletes the management cluster: every host is clean, and each host's job
//!    journal shows every job once and no work left without a reset.
//!
//! Artifacts (logs of the bootstrap plane, the nodes' journals, every Pod's log) stay in
//! `_artifacts/e2e/installed-<pid>/` and `_artifacts/e2e/installed-bootstrap-<pid>/`.

use capssh::api::MOVE_LABEL;
use capssh_e2e::addon_images::serve_addons;
use capssh_e2e::apply::{apply_all, documents};
use capssh_e2e::capi_specs;
use capssh_e2e::clusterctl::LocalRepository;
use capssh_e2e::images::{CACHE, push};
use capssh_e2e::installed::{in_repository, install_images, stripped};
use capssh_e2e::mirror::{MirrorServer, build_mirror};
use capssh_e2e::nodes::{GATEWAY, NodeFarm, VIRTUAL_IP};
use capssh_e2e::provider_pods::*;
use capssh_e2e::registry::Registry;
use capssh_e2e::release::{CAPI_VERSION, ManagementCluster, Release};
use capssh_e2e::sandbox::{SandboxSettings, adapt};
use capssh_e2e::scenario::{namespace, register_some_nodes};
use capssh_e2e::tools::{artifacts_dir, capssh, repo_root};
use capssh_e2e::workload::*;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::ops::Range;
use std::path::Path;

const SUITE: &str = "installed";
const VERSION: &str = "v1.36.3";
const NEXT: &str = "v1.36.4";
/// The management cluster's nodes (registered on the bootstrap plane: 3 control planes and 1
/// worker at most, and one more for each rollout's or scale-up's extra machine) and the workload
/// cluster's (registered on the management cluster); Cluster API's specs, when asked for, run on
/// the workload cluster's and the farm's last ones.
const MANAGEMENT_NODES: Range<usize> = 0..5;
const WORKLOAD_NODES: Range<usize> = 5..8;
const SPEC_NODES: Range<usize> = 5..5 + capi_specs::HOSTS;
/// The hosts of the clusters ClusterctlUpgrade's own management cluster makes.
const SECOND_SPEC_NODES: Range<usize> = SPEC_NODES.end..SPEC_NODES.end + capi_specs::upgrade::SECOND_HOSTS;
const BOOTSTRAP_NS: &str = "bootstrap";
const MANAGEMENT: &str = "management";
const NS: &str = "workloads";
const WORKLOAD: &str = "workload";
/// The workload cluster's control-plane VIP (the management cluster holds [`VIRTUAL_IP`]).
const WORKLOAD_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 253);
/// The workload cluster's Pod and Service networks.
const WORKLOAD_NETWORKS: (&str, &str) = ("198.19.128.0/18", "198.19.224.0/20");
/// Where clusterctl's `images` setting sends every image, under the registry.
const IMAGE_PATH: &str = "capssh-install";
const REGISTRY_CA: &str = "registry-ca";
const REGISTRY_CREDENTIALS: &str = "registry-pull";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clusterctl_init_into_a_cluster_capssh_made() -> anyhow::Result<()> {
    let mut timeline = Timeline::start();
    let work = artifacts_dir(SUITE);
    // The bootstrap plane: Cluster API and capssh installed by clusterctl, their managers as processes.
    let current = Release::current(&work)?;
    let bootstrap = ManagementCluster::start(SUITE, "bootstrap", &[&current], &current, 1).await?;
    let client = bootstrap.plane.client().await?;
    let filter = capi_specs::label_filter();
    let upgrade_selected = match &filter {
        Some(filter) => capi_specs::upgrade::selected(filter)?,
        None => false,
    };
    let node_count = match filter {
        Some(_) if upgrade_selected => SECOND_SPEC_NODES.end,
        Some(_) => SPEC_NODES.end,
        None => WORKLOAD_NODES.end,
    };
    let nodes = NodeFarm::start(SUITE, node_count)?;
    namespace(&client, BOOTSTRAP_NS).await?;
    register_some_nodes(&client, BOOTSTRAP_NS, &nodes, MANAGEMENT_NODES, json!({"role": "kubeadm"})).await?;
    timeline.mark(&format!("bootstrap plane up (clusterctl init, managers as processes); {} bare nodes booted", nodes.nodes.len()));

    let mirror_root = work.join("mirror");
    let (artifacts, next_artifacts) = (build_mirror(&mirror_root, VERSION)?, build_mirror(&mirror_root, NEXT)?);
    let mirror = MirrorServer::start(&mirror_root, (GATEWAY, 0).into())?;
    let registry = Registry::start_on(&work.join("registry"), GATEWAY)?;
    serve_addons(&registry, &[VERSION, NEXT])?;
    let image_repository = format!("{}/{IMAGE_PATH}", registry.address);
    let capssh_binary = stripped(&capssh(), &work.join("bin"))?;
    let mut pushed = Vec::new();
    for archive in install_images(&capssh_binary, Path::new(CACHE))? {
        let target = in_repository(&archive.reference, &image_repository);
        let digest = push(&archive, &target, &registry.crane_env())?;
        anyhow::ensure!(digest == archive.digest, "{target}: the registry stored {digest}, the archive holds {}", archive.digest);
        pushed.push(target);
    }
    eprintln!("pushed: {}", pushed.join(", "));
    let mut pull_objects = registry.pull_objects(REGISTRY_CA, REGISTRY_CREDENTIALS)?;
    for object in &mut pull_objects {
        // clusterctl move takes what is labelled (capssh labels the SSH credentials it uses itself).
        object["metadata"]["labels"][MOVE_LABEL] = json!("");
    }
    let pool_objects = [pull_objects, documents(&std::fs::read_to_string(repo_root().join("templates/addons/cni-kube-router.yaml"))?)?].concat();
    apply_all(&client, &pool_objects, Some(BOOTSTRAP_NS), false).await?;
    let settings = SandboxSettings {
        artifacts_url: mirror.url(),
        artifacts_checksums_sha256: artifacts.sums_sha256.clone(),
        registry_endpoint: format!("https://{}", registry.address),
        registry_ca_config_map: REGISTRY_CA.into(),
        registry_credentials_secret: REGISTRY_CREDENTIALS.into(),
    };
    timeline.mark(&format!("artifact mirror; registry with the add-ons and the {} images clusterctl installs", pushed.len()));

    // 1. The management cluster, made by capssh from the bootstrap plane.
    let rendered = render(&bootstrap.repo, MANAGEMENT, BOOTSTRAP_NS, VIRTUAL_IP, ("198.19.0.0/17", "198.19.240.0/20"), &settings)?;
    apply_all(&client, &rendered, Some(BOOTSTRAP_NS), false).await?;
    let management = Workload::wait_from_secret(&client, BOOTSTRAP_NS, MANAGEMENT, &work, 10).await?;
    wait_cluster(&client, BOOTSTRAP_NS, &management, 2, VERSION, 20).await?;
    timeline.mark("management cluster made by capssh: 1 control plane (kube-vip) + 1 worker, nodes Ready");

    // 2. clusterctl init, as users run it.
    let install = capssh_e2e::installed::publish(&work.join("install-repository"), &current.dir, &current.version, &image_repository, VERSION)?;
    let management_kubeconfig = management.kubeconfig.display().to_string();
    let (core, kubeadm, ssh) = (format!("cluster-api:{CAPI_VERSION}"), format!("kubeadm:{CAPI_VERSION}"), format!("ssh:{}", current.version));
    let init = install
        .run(
            &[
                "init",
                "--kubeconfig",
                &management_kubeconfig,
                "--core",
                &core,
                "--bootstrap",
                &kubeadm,
                "--control-plane",
                &kubeadm,
                "--infrastructure",
                &ssh,
                "--wait-providers",
                "--wait-provider-timeout",
                "900",
            ],
            &capi_specs::init_variables(),
        )
        .map_err(|err| anyhow::anyhow!("clusterctl init: {err}"))
        .inspect_err(|_| {
            save_pod_logs(&management, &work);
        })?;
    std::fs::write(work.join("clusterctl-init.txt"), &init)?;
    timeline.mark("clusterctl init: cert-manager, Cluster API and capssh Deployments Available");
    let mgmt = management.client().await?;
    check_providers_run_as_pods(&management, &image_repository)?;
    check_webhook_certificate_from_cert_manager(&management)?;
    timeline.mark("every provider in Pods from the registry; capssh's webhook certificate from cert-manager");

    // 3. Two replicas: one leader; probes, metrics and logs.
    scale_capssh(&management, 2)?;
    wait_for(5, "two capssh replicas Ready", || async { ready_replicas(&management, 2) }).await?;
    let leader = wait_for(2, "a leader among the replicas", || async { leader_among_replicas(&management) }).await?;
    check_readiness_probe(&management)?;
    let metrics = management.kubectl(&["get", "--raw", &format!("/api/v1/namespaces/{CAPSSH_NS}/pods/{leader}:8080/proxy/metrics")])?;
    anyhow::ensure!(metrics.contains("capssh_build_info") && metrics.contains("capssh_hosts"), "the leader's /metrics:\n{metrics}");
    timeline.mark("2 replicas Ready, one leader; /metrics through the Pod");

    // 4. A workload cluster from the management cluster.
    namespace(&mgmt, NS).await?;
    register_some_nodes(&mgmt, NS, &nodes, WORKLOAD_NODES, json!({"role": "kubeadm"})).await?;
    apply_all(&mgmt, &pool_objects, Some(NS), false).await?;
    let rendered = render(&install, WORKLOAD, NS, WORKLOAD_VIP, WORKLOAD_NETWORKS, &settings)?;
    apply_all(&mgmt, &rendered, Some(NS), false).await?;
    // The leader's Pod goes while a host job (preparation or bootstrap) runs.
    wait_for(10, "a machine whose preparation or bootstrap runs", || async { Ok(ssh_machine_in(&mgmt, NS, &HOST_JOB_RUNNING).await) })
        .await
        .inspect_err(|_| print_capssh_warnings(&management, &work))?;
    let leader = leader_among_replicas(&management)?.map_err(anyhow::Error::msg)?;
    let next = delete_leader_pod(&management, &leader, &work).await?;
    eprintln!("deleted the leader's Pod {leader} mid-job; {next} took over");
    timeline.mark("leader's Pod deleted mid-job; the other replica took the lease");
    let workload = Workload::wait_from_secret(&mgmt, NS, WORKLOAD, &work, 10).await?;
    wait_cluster(&mgmt, NS, &workload, 2, VERSION, 20).await.inspect_err(|_| explain_timeout(&management, &work, &nodes))?;
    wait_for(5, "two capssh replicas Ready again", || async { ready_replicas(&management, 2) }).await?;
    timeline.mark("workload cluster: 1 control plane + 1 worker Running, nodes Ready; Pod replaced");

    // One replica: its Pod goes while the new worker's preparation or bootstrap runs; its replacement finishes it.
    scale_capssh(&management, 1)?;
    let only = wait_for(3, "one capssh replica, the leader", || async {
        let pods = ready_capssh_pods(&management)?;
        Ok(match leader_among_replicas(&management)? {
            Ok(leader) if pods == [leader.clone()] => Ok(leader),
            other => Err(format!("Ready {pods:?}, lease {other:?}")),
        })
    })
    .await?;
    scale_machine_deployment(&mgmt, NS, &format!("{WORKLOAD}-md-0"), 2).await?;
    wait_for(10, "the new worker's preparation or bootstrap running", || async { Ok(ssh_machine_in(&mgmt, NS, &HOST_JOB_RUNNING).await) })
        .await
        .inspect_err(|_| print_capssh_warnings(&management, &work))?;
    let replacement = delete_leader_pod(&management, &only, &work).await?;
    eprintln!("deleted the only capssh Pod {only} mid-job; its replacement {replacement} leads");
    wait_cluster(&mgmt, NS, &workload, 3, VERSION, 15).await.inspect_err(|_| explain_timeout(&management, &work, &nodes))?;
    timeline.mark("scale workers 1 -> 2, the only capssh Pod deleted mid-job, its replacement finished it");
    check_template_webhook_through_service(&mgmt).await?;
    api(&mgmt, NS, CLUSTER).delete(WORKLOAD, &DeleteParams::default()).await?;
    wait_all_released(&mgmt, NS).await?;
    for node in &nodes.nodes[WORKLOAD_NODES] {
        assert_clean(&nodes, &node.name)?;
    }
    timeline.mark("workload cluster deleted: its hosts reset, Available, clean");
    let mut logs = save_pod_logs(&management, &work);
    for deleted in [&leader, &only] {
        logs.push((deleted.clone(), std::fs::read_to_string(work.join(format!("{deleted}.log")))?));
    }
    check_capssh_logs(&logs)?;
    timeline.mark("capssh logs: JSON lines, no request refused by RBAC");

    if let Some(filter) = capi_specs::label_filter() {
        let target = capi_specs::Target {
            work: &work,
            management: &management,
            repository: &install,
            registry: &registry,
            settings: &settings,
            nodes: &nodes,
            hosts: SPEC_NODES,
            second_hosts: if upgrade_selected { SECOND_SPEC_NODES } else { SECOND_SPEC_NODES.start..SECOND_SPEC_NODES.start },
            registered_in: NS,
            kubernetes_version: VERSION,
            vip: WORKLOAD_VIP,
            networks: WORKLOAD_NETWORKS,
        };
        capi_specs::run(&filter, &target).await?;
        timeline.mark(&format!("Cluster API's e2e specs ({filter}) on the workload hosts"));
    }

    match std::env::var("CAPSSH_E2E_SELF_HOSTED").as_deref() {
        Ok("1") => self_hosted(&bootstrap, &management, &install, &image_repository, &mut timeline, &next_artifacts.sums_sha256, true).await?,
        Ok("sample") => self_hosted(&bootstrap, &management, &install, &image_repository, &mut timeline, &next_artifacts.sums_sha256, false).await?,
        _ => eprintln!("self-hosted steps skipped: CAPSSH_E2E_SELF_HOSTED=1 (make self-hosted) or =sample (make test) runs them"),
    }

    // 7. The bootstrap plane deletes the management cluster.
    api(&client, BOOTSTRAP_NS, CLUSTER).delete(MANAGEMENT, &DeleteParams::default()).await?;
    wait_all_released(&client, BOOTSTRAP_NS).await?;
    for node in &nodes.nodes[MANAGEMENT_NODES] {
        assert_clean(&nodes, &node.name)?;
    }
    let report = check_jobs_ran_once(&nodes)?;
    timeline.mark("management cluster deleted; every job ran once on every host");
    let table = timeline.render();
    std::fs::write(work.join("timeline.txt"), format!("{table}\n{report}"))?;
    eprintln!("\n{table}\n{report}artifacts: {}", work.display());
    Ok(())
}

/// The management cluster takes its own objects (`clusterctl move` into itself) and, self-hosted,
/// scales its control plane 1 → 3 (`full`) and its workers 1 → 2 → 1, then (`full`) rolls both
/// to [`NEXT`] while cert-manager, Cluster API and capssh run on the nodes being replaced; then
/// its objects move back to the bootstrap plane.
async fn self_hosted(
    bootstrap: &ManagementCluster,
    management: &Workload,
    install: &LocalRepository,
    image_repository: &str,
    timeline: &mut Timeline,
    next_pin: &str,
    full: bool,
) -> anyhow::Result<()> {
    let mgmt = management.client().await?;
    let management_kubeconfig = management.kubeconfig.display().to_string();
    scale_capssh(management, 2)?;
    wait_for(5, "two capssh replicas Ready", || async { ready_replicas(management, 2) }).await?;
    let moved = bootstrap.clusterctl(&["move", "-n", BOOTSTRAP_NS, "--to-kubeconfig", &management_kubeconfig]).map_err(anyhow::Error::msg)?;
    std::fs::write(bootstrap.plane.dir.join("clusterctl-move-in.txt"), moved)?;
    let client = bootstrap.plane.client().await?;
    anyhow::ensure!(list(&client, BOOTSTRAP_NS, CLUSTER).await?.is_empty(), "the Cluster stayed on the bootstrap plane");
    wait_cluster(&mgmt, BOOTSTRAP_NS, management, 2, VERSION, 10).await?;
    timeline.mark("clusterctl move into itself: the management cluster is self-hosted");

    let patches = PatchParams::default();
    let (control_plane, workers) = (format!("{MANAGEMENT}-control-plane"), format!("{MANAGEMENT}-md-0"));
    let nodes = if full { 4 } else { 2 };
    if full {
        api(&mgmt, BOOTSTRAP_NS, KUBEADM_CONTROL_PLANE).patch(&control_plane, &patches, &Patch::Merge(json!({"spec": {"replicas": 3}}))).await?;
        wait_cluster(&mgmt, BOOTSTRAP_NS, management, nodes, VERSION, 20).await?;
        timeline.mark("self-hosted: control plane 1 -> 3");
    }
    scale_machine_deployment(&mgmt, BOOTSTRAP_NS, &workers, 2).await?;
    wait_cluster(&mgmt, BOOTSTRAP_NS, management, nodes + 1, VERSION, 15).await?;
    scale_machine_deployment(&mgmt, BOOTSTRAP_NS, &workers, 1).await?;
    wait_cluster(&mgmt, BOOTSTRAP_NS, management, nodes, VERSION, 15).await?;
    timeline.mark("self-hosted: workers 1 -> 2 -> 1");
    if !full {
        return move_back(bootstrap, install, &management_kubeconfig, management, nodes, VERSION, timeline).await;
    }

    let pods_before = provider_pod_uids(management)?;
    let control_plane_next = pinned_copy(&mgmt, BOOTSTRAP_NS, &control_plane, NEXT, next_pin).await?;
    let workers_next = pinned_copy(&mgmt, BOOTSTRAP_NS, &workers, NEXT, next_pin).await?;
    let kcp = json!({"spec": {"version": NEXT, "machineTemplate": {"spec": {"infrastructureRef": {"name": control_plane_next}}}}});
    api(&mgmt, BOOTSTRAP_NS, KUBEADM_CONTROL_PLANE).patch(&control_plane, &patches, &Patch::Merge(kcp)).await?;
    let md = json!({"spec": {"template": {"spec": {"version": NEXT, "infrastructureRef": {"name": workers_next}}}}});
    api(&mgmt, BOOTSTRAP_NS, MACHINE_DEPLOYMENT).patch(&workers, &patches, &Patch::Merge(md)).await?;
    wait_cluster(&mgmt, BOOTSTRAP_NS, management, 4, NEXT, 40).await?;
    // Every node was replaced: every provider Pod was evicted and started again elsewhere.
    wait_for(10, "every provider Available again, in new Pods", || async {
        if let Err(err) = check_providers_run_as_pods(management, image_repository) {
            return Ok(Err(format!("{err:#}")));
        }
        let survivors: Vec<String> = provider_pod_uids(management)?.intersection(&pods_before).cloned().collect();
        Ok(if survivors.is_empty() { Ok(()) } else { Err(format!("Pods that were never rescheduled: {survivors:?}")) })
    })
    .await?;
    wait_for(5, "a capssh leader among two Ready replicas", || async {
        ready_replicas(management, 2)?.map_err(|e| anyhow::anyhow!(e))?;
        leader_among_replicas(management)
    })
    .await?;
    timeline.mark(&format!("self-hosted: rolled to {NEXT} (3 control planes, 1 worker); every provider Pod rescheduled"));
    move_back(bootstrap, install, &management_kubeconfig, management, nodes, NEXT, timeline).await
}

/// `clusterctl move` of the management cluster's objects back to the bootstrap plane, which then
/// sees the cluster whole: `nodes` Ready at `version`.
async fn move_back(
    bootstrap: &ManagementCluster,
    install: &LocalRepository,
    management_kubeconfig: &str,
    management: &Workload,
    nodes: usize,
    version: &str,
    timeline: &mut Timeline,
) -> anyhow::Result<()> {
    let bootstrap_kubeconfig = bootstrap.plane.kubeconfig.display().to_string();
    let moved = install
        .run(&["move", "-n", BOOTSTRAP_NS, "--kubeconfig", management_kubeconfig, "--to-kubeconfig", &bootstrap_kubeconfig], &[])
        .map_err(anyhow::Error::msg)?;
    std::fs::write(bootstrap.plane.dir.join("clusterctl-move-out.txt"), moved)?;
    let client = bootstrap.plane.client().await?;
    wait_cluster(&client, BOOTSTRAP_NS, management, nodes, version, 10).await?;
    timeline.mark("clusterctl move back to the bootstrap plane");
    Ok(())
}

/// UIDs of every Pod in the provider namespaces.
fn provider_pod_uids(cluster: &Workload) -> anyhow::Result<BTreeSet<String>> {
    let mut uids = BTreeSet::new();
    for (ns, _) in PROVIDERS {
        for pod in items(&kubectl_json(cluster, &["-n", ns, "get", "pods"])?) {
            uids.insert(format!(
                "{ns}/{}/{}",
                pod["metadata"]["name"].as_str().unwrap_or_default(),
                pod["metadata"]["uid"].as_str().unwrap_or_default()
            ));
        }
    }
    Ok(uids)
}

/// `clusterctl generate cluster` of the default flavor (kube-vip on `vip`), 1 control plane and 1
/// worker, with the sandbox's needs laid over it.
fn render(
    repo: &LocalRepository,
    name: &str,
    ns: &str,
    vip: Ipv4Addr,
    (pods, services): (&str, &str),
    settings: &SandboxSettings,
) -> anyhow::Result<Vec<Value>> {
    let provider = format!("ssh:{}", repo.version);
    let args = ["generate", "cluster", name, "--infrastructure", &provider, "--target-namespace", ns, "--kubernetes-version", VERSION];
    let counts = ["--control-plane-machine-count", "1", "--worker-machine-count", "1"];
    let env = [
        ("SSH_CONTROL_PLANE_ENDPOINT_HOST", vip.to_string()),
        ("SSH_KUBE_VIP_INTERFACE", "eth0".into()),
        ("SSH_CONTROL_PLANE_HOST_ROLE", "kubeadm".into()),
        ("SSH_WORKER_HOST_ROLE", "kubeadm".into()),
        ("SSH_POD_CIDR", pods.into()),
        ("SSH_SERVICE_CIDR", services.into()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let rendered = repo.run(&[&args[..], &counts[..]].concat(), &env).map_err(anyhow::Error::msg)?;
    let mut docs = documents(&rendered)?;
    adapt(&mut docs, settings)?;
    Ok(docs)
}

/// The API server sends an update of an SSHMachineTemplate to capssh's webhook, through its
/// Service, and returns the webhook's refusal.
async fn check_template_webhook_through_service(client: &kube::Client) -> anyhow::Result<()> {
    let templates = list(client, NS, SSH_MACHINE_TEMPLATE).await?;
    let name = templates.first().and_then(|t| t.metadata.name.clone()).ok_or_else(|| anyhow::anyhow!("no SSHMachineTemplate"))?;
    let patch = Patch::Merge(json!({"spec": {"template": {"spec": {"hostSelector": {"matchLabels": {"role": "changed"}}}}}}));
    match api(client, NS, SSH_MACHINE_TEMPLATE).patch(&name, &PatchParams::default(), &patch).await {
        Err(kube::Error::Api(e)) if e.message.contains("denied the request") && e.message.contains("immutable") => Ok(()),
        other => anyhow::bail!("changing {name}'s spec: expected capssh's webhook to refuse it, got {other:?}"),
    }
}

async fn wait_all_released(client: &kube::Client, ns: &str) -> anyhow::Result<()> {
    wait_for(15, &format!("the cluster in {ns} gone and every host Available"), || async {
        let machines = list(client, ns, MACHINE).await?;
        let busy = busy_hosts(client, ns).await?;
        Ok(if machines.is_empty() && busy.is_empty() { Ok(()) } else { Err(format!("{} machines, busy hosts {busy:?}", machines.len())) })
    })
    .await
}

/// No job id twice in any host's journal, and one reset per bootstrap.
fn check_jobs_ran_once(nodes: &NodeFarm) -> anyhow::Result<String> {
    let mut report = String::new();
    for (i, node) in nodes.nodes.iter().enumerate() {
        let journal = nodes.exec_ok(i, "cat /var/lib/capssh/jobs/journal 2>/dev/null || true")?;
        let mut starts: BTreeMap<&str, usize> = BTreeMap::new();
        for id in journal.lines().filter_map(|l| l.split_whitespace().nth(1)) {
            *starts.entry(id).or_default() += 1;
        }
        let repeated: Vec<_> = starts.iter().filter(|(_, n)| **n > 1).collect();
        anyhow::ensure!(repeated.is_empty(), "{}: jobs started more than once: {repeated:?}\n{journal}", node.name);
        let count = |prefix: &str| starts.keys().filter(|id| id.starts_with(prefix)).count();
        if let Some(problem) = unreset_work(&journal) {
            anyhow::bail!("{}: every machine placed on the host is reset at its end: {problem}\n{journal}", node.name);
        }
        report.push_str(&format!(
            "{}: {} bootstraps, {} resets, {} preparations\n",
            node.name,
            count("bootstrap-"),
            count("cleanup-"),
            count("prepare-")
        ));
    }
    Ok(report)
}

/// Where a host's journal (one started job per line, in order) shows work not reset at its end:
/// a second bootstrap before a reset, or work after the last reset. A reset after a preparation
/// alone is a machine deleted before its bootstrap; resets in a row are a reset started again.
fn unreset_work(journal: &str) -> Option<String> {
    let (mut bootstrapped, mut touched) = (None::<&str>, None::<&str>);
    for id in journal.lines().filter_map(|l| l.split_whitespace().nth(1)) {
        if id.starts_with("cleanup-") {
            (bootstrapped, touched) = (None, None);
            continue;
        }
        if id.starts_with("bootstrap-")
            && let Some(before) = bootstrapped
        {
            return Some(format!("{id} started on a host {before} left without a reset"));
        }
        touched = Some(id);
        if id.starts_with("bootstrap-") {
            bootstrapped = Some(id);
        }
    }
    touched.map(|id| format!("{id} was never followed by a reset"))
}

#[test]
fn a_preparation_reset_before_its_bootstrap_is_whole_and_work_left_is_not() {
    let line = |id: &str| format!("2026-12-07T14:12:29Z {id} started\n");
    let journal = |ids: &[&str]| ids.iter().map(|id| line(id)).collect::<String>();
    assert_eq!(unreset_work(&journal(&["prepare-a", "cleanup-a", "prepare-b", "bootstrap-b", "cleanup-b"])), None);
    assert_eq!(unreset_work(&journal(&["cleanup-x", "cleanup-y"])), None);
    assert_eq!(unreset_work(""), None);
    assert!(unreset_work(&journal(&["prepare-a", "bootstrap-a", "cleanup-a", "prepare-b"])).is_some_and(|p| p.contains("prepare-b")));
    assert!(unreset_work(&journal(&["bootstrap-a", "prepare-b", "bootstrap-b", "cleanup-b"])).is_some_and(|p| p.contains("bootstrap-a")));
}

/// Why capssh did not get the workload cluster's machines Running: its warnings, and what each
/// workload host holds of its jobs (the run's own output is all a CI failure keeps).
fn explain_timeout(management: &Workload, work: &std::path::Path, nodes: &NodeFarm) {
    print_capssh_warnings(management, work);
    for i in WORKLOAD_NODES {
        eprintln!("===== what {} holds of capssh's work\n{}", nodes.nodes[i].name, nodes.capssh_work(i));
    }
}

/// Saves every provider Pod's log and prints the last warnings and errors capssh's Pods logged:
/// a wait on capssh that timed out says why in the run's own output.
fn print_capssh_warnings(management: &Workload, work: &std::path::Path) {
    for (pod, log) in save_pod_logs(management, work) {
        let warnings: Vec<&str> = log.lines().filter(|l| l.contains(r#""level":"WARN""#) || l.contains(r#""level":"ERROR""#)).collect();
        eprintln!("capssh Pod {pod}: {} warnings and errors, the last ones:", warnings.len());
        for line in &warnings[warnings.len().saturating_sub(15)..] {
            eprintln!("  {}", line.chars().take(400).collect::<String>());
        }
    }
}
