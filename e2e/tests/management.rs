//! Management-cluster operations (issue 8), on real kubeadm nodes, with Cluster API and capssh
//! installed by the real `clusterctl init` into two management clusters (A and B):
//!
//! 1. on A, capssh's previous release (hack/previous-release) creates a cluster: 1 control
//!    plane + 1 worker;
//! 2. `clusterctl upgrade apply` to this release, the replicas rolled onto it (now two, with
//!    leader election): nothing on the cluster changes, no host-side job starts;
//! 3. scale the workers up and kill the leader while the new machine's preparation or bootstrap runs;
//! 4. scale up and restart A's kube-apiserver while the new machine is provisioning;
//! 5. scale down and kill the leader while the released hosts are being reset;
//! 6. `clusterctl move` while a machine provisions is refused by clusterctl; once it is Running,
//!    the cluster moves to B: claims, pinned host keys and providerIDs intact, every machine
//!    provisioned again from spec and the hosts' job records, no job started;
//! 7. from B: scale down, then delete the cluster: every host reset once, Available and clean.
//!
//! Every host's job journal (/var/lib/capssh/jobs/journal) and a line the bootstrap data itself
//! appends on the host (/var/lib/capssh-e2e/bootstrap-runs) are counted at the end: each
//! bootstrap and each reset ran exactly once, whatever was killed, restarted or moved.

use capssh_e2e::apply::{apply_all, documents};
use capssh_e2e::mirror::{MirrorServer, build_mirror};
use capssh_e2e::nodes::balancer::Balancer;
use capssh_e2e::nodes::{ENDPOINT, GATEWAY, NodeFarm};
use capssh_e2e::release::{CapsshReplicas, ManagementCluster, Release};
use capssh_e2e::scenario::{namespace, register_nodes};
use capssh_e2e::tools::{artifacts_dir, repo_root};
use capssh_e2e::workload::*;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::DeleteParams;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

const SUITE: &str = "management";
const NS: &str = "management";
const NAME: &str = "moved";
const VERSION: &str = "v1.36.3";
const NODES: usize = 5;
/// Appended on the host by the bootstrap data itself, not by capssh.
const MARKER: &str = "/var/lib/capssh-e2e/bootstrap-runs";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upgrade_failover_restart_and_move_leave_the_hosts_alone() -> anyhow::Result<()> {
    let mut timeline = Timeline::start();
    let work = artifacts_dir(SUITE);
    let previous = Release::previous()?;
    let current = Release::current(&work)?;
    timeline.mark(&format!("releases: {} (built from its commit) and {}", previous.version, current.version));

    let mut a = ManagementCluster::start(SUITE, "a", &[&previous, &current], &previous, 1).await?;
    let b = ManagementCluster::start(SUITE, "b", &[&current], &current, 1).await?;
    for (cluster, version) in [(&a, &previous.version), (&b, &current.version)] {
        let folder = cluster.repo.root.join("infrastructure-ssh").join(version);
        std::fs::copy(repo_root().join("e2e/templates/cluster-template-nodes-only.yaml"), folder.join("cluster-template-nodes-only.yaml"))?;
    }
    let client = a.plane.client().await?;
    let target = b.plane.client().await?;
    timeline.mark(&format!("clusterctl init: A with capssh {}, B with {}", previous.version, current.version));

    let nodes = NodeFarm::start(SUITE, NODES)?;
    let _endpoint = Balancer::start((ENDPOINT, 6443).into(), nodes.nodes.iter().map(|n| n.address).collect(), 6443)?;
    namespace(&client, NS).await?;
    register_nodes(&client, NS, &nodes, json!({"role": "kubeadm"})).await?;
    let mirror_root = work.join("mirror");
    let mirror_build = build_mirror(&mirror_root, VERSION)?;
    let mirror = MirrorServer::start(&mirror_root, (GATEWAY, 0).into())?;
    timeline.mark(&format!("{NODES} nodes, artifact mirror for {VERSION}"));

    // 1. Create with the previous release.
    let rendered = a
        .repo
        .run(
            &[
                "generate",
                "cluster",
                NAME,
                "--infrastructure",
                &format!("ssh:{}", previous.version),
                "--flavor",
                "nodes-only",
                "--target-namespace",
                NS,
                "--kubernetes-version",
                VERSION,
                "--control-plane-machine-count",
                "1",
                "--worker-machine-count",
                "1",
            ],
            &[
                ("SSH_CONTROL_PLANE_ENDPOINT_HOST", &ENDPOINT.to_string()),
                ("SSH_ARTIFACTS_URL", &mirror.url()),
                ("SSH_ARTIFACTS_CHECKSUMS_SHA256", &mirror_build.sums_sha256),
                ("SSH_CONTROL_PLANE_HOST_ROLE", "kubeadm"),
                ("SSH_WORKER_HOST_ROLE", "kubeadm"),
            ],
        )
        .map_err(anyhow::Error::msg)?;
    let docs = with_bootstrap_marker(documents(&rendered)?);
    apply_all(&client, &docs, Some(NS), false).await?;
    let workload = Workload::wait_from_secret(&client, NS, NAME, &work, 5).await?;
    wait_cluster(&client, NS, &workload, 2, VERSION, 20).await?;
    // The previous release keeps no job journal: its bootstraps are known from the claims.
    let bootstrapped_by_previous = claimed_hosts(&client, NS).await?;
    timeline.mark(&format!("create with capssh {}: 1 control plane + 1 worker Running", previous.version));

    // 2. Upgrade capssh with clusterctl; the Deployment's pods would roll: so do the replicas.
    let before = snapshot(&client).await?;
    let journal_before = journals(&nodes)?;
    let out =
        a.clusterctl(&["upgrade", "apply", "--infrastructure", &format!("capssh-system/ssh:{}", current.version)]).map_err(anyhow::Error::msg)?;
    std::fs::write(a.plane.dir.join("clusterctl-upgrade.txt"), out)?;
    a.capssh.roll_to(&current.binary)?;
    a.capssh.add_replica()?;
    let plan = a.clusterctl(&["upgrade", "plan"]).map_err(anyhow::Error::msg)?;
    assert!(plan.lines().any(|l| l.contains("infrastructure-ssh") && l.contains(&current.version) && l.contains("Already up to date")), "{plan}");
    wait_for(3, "capssh's new replicas to hold the lease", || async {
        Ok(CapsshReplicas::leader(&client).await.ok_or_else(|| "no leader yet".to_string()))
    })
    .await?;
    // Give the new release time to reconcile everything it found; then nothing may differ.
    tokio::time::sleep(Duration::from_secs(10)).await;
    wait_cluster(&client, NS, &workload, 2, VERSION, 5).await?;
    assert_eq!(snapshot(&client).await?, before, "objects written by {} must read back unchanged under {}", previous.version, current.version);
    assert_eq!(journals(&nodes)?, journal_before, "the upgrade must start no job on any host");
    let crds: kube::Api<CustomResourceDefinition> = kube::Api::all(client.clone());
    let hosts_crd = crds.get("sshhosts.infrastructure.cluster.x-k8s.io").await?;
    assert!(hosts_crd.metadata.labels.unwrap_or_default().contains_key("clusterctl.cluster.x-k8s.io/move"), "the upgrade installs the new CRDs");
    timeline.mark(&format!("clusterctl upgrade apply {} -> {}: nothing changed, no job started", previous.version, current.version));

    // 3. Scale up; kill the leader while the new machine's preparation or bootstrap runs.
    scale_machine_deployment(&client, NS, &format!("{NAME}-md-0"), 2).await?;
    wait_for(5, "a machine whose preparation or bootstrap is running", || async { Ok(ssh_machine_in(&client, NS, &HOST_JOB_RUNNING).await) }).await?;
    kill_leader(&mut a, &client).await?;
    wait_cluster(&client, NS, &workload, 3, VERSION, 10).await?;
    timeline.mark("scale 1 -> 2 workers, leader killed mid-job: the other replica finished it");

    // 4. Scale up; restart the management apiserver while the new machine provisions.
    scale_machine_deployment(&client, NS, &format!("{NAME}-md-0"), 3).await?;
    wait_for(5, "a machine provisioning on its host", || async { Ok(provisioning(&client).await) }).await?;
    let away = std::time::Instant::now();
    a.plane.restart_apiserver(Duration::from_secs(5)).await?;
    let away = away.elapsed().as_secs();
    wait_cluster(&client, NS, &workload, 4, VERSION, 10).await?;
    // A leader that could not renew its lease within the renew deadline (10 s) steps down and
    // exits, as controller-runtime's do; its Deployment would start it again.
    let exited = a.capssh.restart_exited()?;
    let outcome =
        if exited.is_empty() { "the leader reconnected".to_string() } else { format!("replica {exited:?} stepped down, the other took over") };
    timeline.mark(&format!("scale 2 -> 3 workers, kube-apiserver away {away}s mid-provisioning: {outcome}; the machine finished"));

    // 5. Scale down; kill the leader while the released hosts are being reset.
    let claimed_before = claimed_hosts(&client, NS).await?;
    let resets_before = count_in_journals(&nodes, " cleanup-")?;
    scale_machine_deployment(&client, NS, &format!("{NAME}-md-0"), 1).await?;
    // The reset takes seconds: watch the hosts' journals, not the API, to catch it running.
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    while count_in_journals(&nodes, " cleanup-")? == resets_before {
        anyhow::ensure!(std::time::Instant::now() < deadline, "no reset started within 5 min");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let running = (0..NODES)
        .map(|i| nodes.exec_ok(i, "for d in /var/lib/capssh/jobs/cleanup-*; do [ -d \"$d\" ] && [ ! -f \"$d/exit\" ] && echo \"$d\"; done; true"))
        .collect::<anyhow::Result<String>>()?;
    eprintln!("resets running on the hosts as the leader is killed: {:?}", running.lines().collect::<Vec<_>>());
    kill_leader(&mut a, &client).await?;
    wait_cluster(&client, NS, &workload, 2, VERSION, 10).await?;
    let still_claimed = claimed_hosts(&client, NS).await?;
    let released: Vec<&String> = claimed_before.iter().filter(|h| !still_claimed.contains(h)).collect();
    assert_eq!(released.len(), 2, "released {released:?}");
    wait_for(5, "the released hosts Available", || async {
        let hosts = list(&client, NS, SSH_HOST).await?;
        let ready =
            released.iter().all(|name| hosts.iter().any(|h| h.metadata.name.as_ref() == Some(name) && text(h, "/status/phase") == "Available"));
        Ok(if ready { Ok(()) } else { Err("not yet".to_string()) })
    })
    .await?;
    for host in &released {
        assert_clean(&nodes, host)?;
    }
    timeline.mark("scale 3 -> 1 workers, leader killed mid-reset: hosts reset once, Available, clean");

    // 6. Move: refused while a machine provisions, then done.
    scale_machine_deployment(&client, NS, &format!("{NAME}-md-0"), 2).await?;
    wait_for(3, "a new Machine without a node", || async {
        let machines = list(&client, NS, MACHINE).await?;
        Ok(if machines.len() == 3 { Ok(()) } else { Err(format!("{} machines", machines.len())) })
    })
    .await?;
    let b_kubeconfig = b.plane.kubeconfig.display().to_string();
    let refused =
        a.clusterctl(&["move", "-n", NS, "--to-kubeconfig", &b_kubeconfig]).expect_err("clusterctl must refuse to move a provisioning machine");
    assert!(refused.contains("still provisioning"), "{refused}");
    let cluster = api(&client, NS, CLUSTER).get(NAME).await?;
    assert_ne!(cluster.data.pointer("/spec/paused"), Some(&json!(true)), "a refused move leaves the cluster running");
    wait_cluster(&client, NS, &workload, 3, VERSION, 10).await?;
    timeline.mark("clusterctl move refused while a machine provisions; it finished");

    let before = snapshot(&client).await?;
    let journal_before = journals(&nodes)?;
    let out = a.clusterctl(&["move", "-n", NS, "--to-kubeconfig", &b_kubeconfig]).map_err(anyhow::Error::msg)?;
    std::fs::write(a.plane.dir.join("clusterctl-move.txt"), out)?;
    wait_cluster(&target, NS, &workload, 3, VERSION, 10).await?;
    wait_for(5, "every SSHMachine provisioned again on B", || async {
        let machines = list(&target, NS, SSH_MACHINE).await?;
        let waiting: Vec<String> = machines
            .iter()
            .filter(|m| m.data.pointer("/status/initialization/provisioned") != Some(&json!(true)))
            .filter_map(|m| m.metadata.name.clone())
            .collect();
        Ok(if waiting.is_empty() && machines.len() == 3 { Ok(()) } else { Err(format!("not provisioned: {waiting:?}")) })
    })
    .await?;
    assert_eq!(snapshot(&target).await?, before, "claims, pinned host keys and providerIDs must arrive intact");
    assert_eq!(journals(&nodes)?, journal_before, "the move must start no job on any host");
    for kind in [CLUSTER, MACHINE, SSH_MACHINE, SSH_HOST] {
        assert!(list(&client, NS, kind).await?.is_empty(), "{kind:?} left behind on A");
    }
    timeline.mark("clusterctl move to B: everything arrived, provisioned again from spec, no job started");

    // 7. From B: scale down and delete.
    scale_machine_deployment(&target, NS, &format!("{NAME}-md-0"), 1).await?;
    wait_cluster(&target, NS, &workload, 2, VERSION, 10).await?;
    api(&target, NS, CLUSTER).delete(NAME, &DeleteParams::default()).await?;
    wait_for(15, "the cluster gone and every host Available", || async {
        let machines = list(&target, NS, MACHINE).await?;
        let busy = busy_hosts(&target, NS).await?;
        Ok(if machines.is_empty() && busy.is_empty() { Ok(()) } else { Err(format!("{} machines, busy hosts {busy:?}", machines.len())) })
    })
    .await?;
    for node in &nodes.nodes {
        assert_clean(&nodes, &node.name)?;
    }
    timeline.mark("from B: scale 2 -> 1 workers, delete: every host Available and clean");

    // Every bootstrap and every reset ran exactly once, on every host.
    let mut report = String::new();
    for (i, node) in nodes.nodes.iter().enumerate() {
        let journal = nodes.exec_ok(i, "cat /var/lib/capssh/jobs/journal 2>/dev/null || true")?;
        let marker_lines = nodes.exec_ok(i, &format!("cat {MARKER} 2>/dev/null | wc -l"))?.trim().parse::<usize>()?;
        let mut starts: BTreeMap<&str, usize> = BTreeMap::new();
        for id in journal.lines().filter_map(|l| l.split_whitespace().nth(1)) {
            *starts.entry(id).or_default() += 1;
        }
        let repeated: Vec<_> = starts.iter().filter(|(_, n)| **n > 1).collect();
        assert!(repeated.is_empty(), "{}: jobs started more than once: {repeated:?}\n{journal}", node.name);
        let count = |prefix: &str| starts.keys().filter(|id| id.starts_with(prefix)).count();
        let earlier = usize::from(bootstrapped_by_previous.contains(&node.name));
        let (bootstraps, resets) = (count("bootstrap-") + earlier, count("cleanup-"));
        assert_eq!(marker_lines, bootstraps, "{}: the bootstrap data ran {marker_lines} times for {bootstraps} bootstraps", node.name);
        assert_eq!(resets, bootstraps, "{}: every machine placed on the host was reset once at its end", node.name);
        report.push_str(&format!(
            "{}: {bootstraps} bootstraps ({earlier} by {}), {resets} resets, {} preparations\n",
            node.name,
            previous.version,
            count("prepare-")
        ));
    }
    let table = timeline.render();
    std::fs::write(work.join("timeline.txt"), format!("{table}\n{report}"))?;
    eprintln!("\n{table}\n{report}artifacts: {}", work.display());
    drop(b);
    drop(a);
    Ok(())
}

/// Every KubeadmConfig the cluster renders appends a line to [`MARKER`] before kubeadm runs.
fn with_bootstrap_marker(mut docs: Vec<Value>) -> Vec<Value> {
    let line = json!(format!("mkdir -p /var/lib/capssh-e2e && echo ran >> {MARKER}"));
    for doc in &mut docs {
        let spec = match doc["kind"].as_str() {
            Some("KubeadmControlPlane") => doc.pointer_mut("/spec/kubeadmConfigSpec"),
            Some("KubeadmConfigTemplate") => doc.pointer_mut("/spec/template/spec"),
            _ => None,
        };
        if let Some(spec) = spec {
            let commands = spec.as_object_mut().expect("a spec").entry("preKubeadmCommands").or_insert_with(|| json!([]));
            commands.as_array_mut().expect("a list").push(line.clone());
        }
    }
    docs
}

/// Ok while some SSHMachine has a host but is not provisioned yet.
async fn provisioning(client: &kube::Client) -> Result<(), String> {
    let machines = list(client, NS, SSH_MACHINE).await.map_err(|e| e.to_string())?;
    let found = machines
        .iter()
        .any(|m| m.data.pointer("/spec/hostRef").is_some() && m.data.pointer("/status/initialization/provisioned") != Some(&json!(true)));
    if found { Ok(()) } else { Err("no SSHMachine between claim and provisioned".into()) }
}

/// Kills the replica holding the lease; waits for the other to take over, then starts the killed
/// one again (as its Deployment would).
async fn kill_leader(cluster: &mut ManagementCluster, client: &kube::Client) -> anyhow::Result<()> {
    let leader = CapsshReplicas::leader(client).await.ok_or_else(|| anyhow::anyhow!("no leader"))?;
    cluster.capssh.kill(leader);
    let next = wait_for(2, "another replica to take the lease over", || async {
        Ok(match CapsshReplicas::leader(client).await {
            Some(next) if next != leader => Ok(next),
            other => Err(format!("lease held by {other:?}")),
        })
    })
    .await?;
    eprintln!("killed leader replica {leader}; replica {next} took over");
    cluster.capssh.start_replica(leader)
}

/// What must survive an upgrade or a move: every SSHHost's spec (claim, pinned key, address,
/// credentials) and every SSHMachine's and Machine's spec (host, providerID).
async fn snapshot(client: &kube::Client) -> anyhow::Result<BTreeMap<String, Value>> {
    let mut all = BTreeMap::new();
    for (kind, label) in [(SSH_HOST, "SSHHost"), (SSH_MACHINE, "SSHMachine")] {
        for object in list(client, NS, kind).await? {
            all.insert(format!("{label}/{}", object.metadata.name.clone().unwrap_or_default()), object.data["spec"].clone());
        }
    }
    for machine in list(client, NS, MACHINE).await? {
        let spec = json!({"providerID": machine.data.pointer("/spec/providerID"), "version": machine.data.pointer("/spec/version")});
        all.insert(format!("Machine/{}", machine.metadata.name.clone().unwrap_or_default()), spec);
    }
    Ok(all)
}

/// How many journal lines of all nodes contain `needle`.
fn count_in_journals(nodes: &NodeFarm, needle: &str) -> anyhow::Result<usize> {
    Ok(journals(nodes)?.iter().map(|j| j.lines().filter(|l| l.contains(needle)).count()).sum())
}

/// Each node's job journal.
fn journals(nodes: &NodeFarm) -> anyhow::Result<Vec<String>> {
    (0..nodes.nodes.len()).map(|i| nodes.exec_ok(i, "cat /var/lib/capssh/jobs/journal 2>/dev/null || true")).collect()
}
