//! The SSHMachine scenarios of the controllers issue, each against its own real management plane
//! and real sshd hosts.

use capssh::api::v1alpha1::{MachinePhase, SSHHost, SSHMachine};
use capssh_e2e::capi::{install_capssh_crds, install_crds};
use capssh_e2e::hosts::HostFarm;
use capssh_e2e::manager::{eventually, start_manager};
use capssh_e2e::mgmt::ManagementPlane;
use capssh_e2e::process::Daemon;
use capssh_e2e::scenario;
use futures::StreamExt;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

const NS: &str = "scenarios";

/// Bootstrap data that counts its runs on the host and takes `seconds` to finish.
fn counting_bootstrap(seconds: u32) -> String {
    format!(
        "#cloud-config\nruncmd:\n  - echo ran >> /var/lib/capssh/bootstrap-count\n  - sleep {seconds}\n  - mkdir -p /run/cluster-api && echo success > /run/cluster-api/bootstrap-success.complete\n"
    )
}

/// One scenario at a time: each starts its own apiserver, etcd, hosts and manager, and five of
/// them at once on a 2-core machine starve each other.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Bed {
    _serial: tokio::sync::MutexGuard<'static, ()>,
    farm: HostFarm,
    plane: ManagementPlane,
    client: kube::Client,
    manager: Option<Daemon>,
}

async fn bed(suite: &str, hosts: usize) -> Bed {
    bed_with(suite, hosts, &[]).await
}

async fn bed_with(suite: &str, hosts: usize, manager_args: &[&str]) -> Bed {
    let serial = SERIAL.lock().await;
    let farm = HostFarm::start(suite, hosts).unwrap();
    let plane = ManagementPlane::start(suite).await.unwrap();
    let client = plane.client().await.unwrap();
    install_crds(&client).await.unwrap();
    install_capssh_crds(&client).await.unwrap();
    scenario::namespace(&client, NS).await.unwrap();
    scenario::register_farm(&client, NS, &farm, json!({"role": "worker"})).await.unwrap();
    // Probes 2 s apart unless the scenario asks otherwise.
    let probe: &[&str] = if manager_args.contains(&"--probe-interval-seconds") { &[] } else { &["--probe-interval-seconds", "2"] };
    let args: Vec<&str> = probe.iter().chain(manager_args).copied().collect();
    let manager = start_manager(&plane, "capssh", &args).unwrap();
    scenario::provisioned_cluster(&client, NS, "c1").await.unwrap();
    Bed { _serial: serial, farm, plane, client, manager: Some(manager) }
}

fn provisioned(m: &SSHMachine) -> bool {
    m.status.as_ref().and_then(|s| s.initialization.as_ref()).and_then(|i| i.provisioned) == Some(true)
}

fn condition_reason(m: &SSHMachine, kind: &str) -> Option<String> {
    m.status.as_ref()?.conditions.iter().find(|c| c.r#type == kind).map(|c| c.reason.clone())
}

fn condition_message(m: &SSHMachine, kind: &str) -> String {
    m.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.r#type == kind)).map(|c| c.message.clone()).unwrap_or_default()
}

fn index(farm: &HostFarm, host: &str) -> usize {
    farm.hosts.iter().position(|h| h.name == host).unwrap()
}

#[tokio::test]
async fn twenty_machines_share_ten_hosts_without_a_double_claim() {
    let bed = bed("twenty-on-ten", 10).await;
    let hosts: Api<SSHHost> = Api::namespaced(bed.client.clone(), NS);
    let machines: Api<SSHMachine> = Api::namespaced(bed.client.clone(), NS);

    // Record every claim the API server stores: a host's consumer may only change through None.
    let history: Arc<Mutex<BTreeMap<String, Vec<Option<String>>>>> = Arc::default();
    let recorder = {
        let history = history.clone();
        let stream = watcher(hosts.clone(), watcher::Config::default()).applied_objects();
        tokio::spawn(async move {
            futures::pin_mut!(stream);
            while let Some(Ok(host)) = stream.next().await {
                let consumer = host.spec.consumer_ref.map(|c| c.name);
                let mut history = history.lock().unwrap();
                let seen = history.entry(host.metadata.name.unwrap()).or_default();
                if seen.last() != Some(&consumer) {
                    seen.push(consumer);
                }
            }
        })
    };
    eventually(120, "all hosts Available", || async {
        let list = hosts.list(&Default::default()).await.ok()?;
        list.items.iter().all(|h| h.status.as_ref().and_then(|s| s.phase) == Some(capssh::api::v1alpha1::HostPhase::Available)).then_some(())
    })
    .await
    .unwrap();

    for i in 0..20 {
        scenario::machine(&bed.client, NS, "c1", &format!("m{i:02}"), &counting_bootstrap(1)).await.unwrap();
    }
    let first_wave = eventually(180, "10 machines provisioned and 10 waiting", || async {
        let list = machines.list(&Default::default()).await.ok()?.items;
        let done = list.iter().filter(|m| provisioned(m)).count();
        let waiting: Vec<_> = list.iter().filter(|m| m.status.as_ref().and_then(|s| s.phase) == Some(MachinePhase::WaitingForHost)).collect();
        (done == 10 && waiting.len() == 10).then(|| list.clone())
    })
    .await
    .unwrap();
    let claimed: Vec<String> = first_wave.iter().filter_map(|m| m.spec.host_ref.as_ref().map(|h| h.name.clone())).collect();
    assert_eq!(claimed.len(), 10, "exactly ten machines hold a host");
    assert_eq!(claimed.iter().collect::<BTreeSet<_>>().len(), 10, "never one host twice: {claimed:?}");
    let waiting = first_wave.iter().find(|m| !provisioned(m)).unwrap();
    let message = condition_message(waiting, "HostClaimed");
    assert!(message.starts_with("0 of 10 hosts free: 10 claimed"), "a waiting machine says why: {message}");

    // Free the hosts: the ten waiting machines proceed.
    for m in first_wave.iter().filter(|m| provisioned(m)) {
        machines.delete(m.metadata.name.as_deref().unwrap(), &DeleteParams::default()).await.unwrap();
    }
    eventually(240, "the other ten machines provisioned", || async {
        let list = machines.list(&Default::default()).await.ok()?.items;
        (list.len() == 10 && list.iter().all(provisioned)).then_some(())
    })
    .await
    .unwrap();
    recorder.abort();
    for (host, consumers) in history.lock().unwrap().iter() {
        for pair in consumers.windows(2) {
            assert!(pair[0].is_none() || pair[1].is_none(), "host {host} went from one consumer to another: {consumers:?}");
        }
    }
    for i in 0..10 {
        assert_eq!(bed.farm.exec_ok(i, "cat /var/lib/capssh/bootstrap-count").unwrap(), "ran\nran\n", "h{i}: one bootstrap per machine");
    }
}

#[tokio::test]
async fn a_manager_killed_mid_bootstrap_is_replaced_and_the_bootstrap_runs_once() {
    let mut bed = bed("restart-mid-bootstrap", 1).await;
    let machines: Api<SSHMachine> = Api::namespaced(bed.client.clone(), NS);
    scenario::machine(&bed.client, NS, "c1", "m1", &counting_bootstrap(8)).await.unwrap();
    eventually(120, "the bootstrap to be running", || async {
        let m = machines.get("m1").await.ok()?;
        (condition_reason(&m, "BootstrapSucceeded")? == "Bootstrapping").then_some(())
    })
    .await
    .unwrap();
    bed.manager.as_mut().unwrap().kill();
    bed.manager = Some(start_manager(&bed.plane, "capssh-restarted", &["--probe-interval-seconds", "2"]).unwrap());
    eventually(120, "the machine to be provisioned by the new manager", || async { provisioned(&machines.get("m1").await.ok()?).then_some(()) })
        .await
        .unwrap();
    assert_eq!(bed.farm.exec_ok(0, "cat /var/lib/capssh/bootstrap-count").unwrap(), "ran\n", "the bootstrap ran exactly once");
}

#[tokio::test]
async fn pause_stops_all_host_work_and_unpause_resumes() {
    let bed = bed("pause", 1).await;
    let clusters = Api::<DynamicObject>::namespaced_with(bed.client.clone(), NS, &capssh::controllers::capi::cluster_resource());
    clusters.patch("c1", &PatchParams::default(), &Patch::Merge(json!({"spec": {"paused": true}}))).await.unwrap();
    scenario::machine(&bed.client, NS, "c1", "m1", &counting_bootstrap(0)).await.unwrap();
    let machines: Api<SSHMachine> = Api::namespaced(bed.client.clone(), NS);
    eventually(120, "Paused=True", || async { (condition_reason(&machines.get("m1").await.ok()?, "Paused")? == "Paused").then_some(()) })
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let m = machines.get("m1").await.unwrap();
    assert!(m.spec.host_ref.is_none(), "no host claimed while paused");
    assert!(bed.farm.exec(0, "ls /var/lib/capssh/jobs").unwrap().stdout.is_empty(), "nothing ran while paused");

    clusters.patch("c1", &PatchParams::default(), &Patch::Merge(json!({"spec": {"paused": false}}))).await.unwrap();
    if let Err(err) = eventually(120, "provisioned after unpause", || async { provisioned(&machines.get("m1").await.ok()?).then_some(()) }).await {
        let host = Api::<SSHHost>::namespaced(bed.client.clone(), NS).get("h0").await.unwrap();
        panic!("{err}: {:?}; host: {:?}", machines.get("m1").await.unwrap().status, host.status);
    }

    // A delete while paused (what clusterctl move does) touches no host.
    clusters.patch("c1", &PatchParams::default(), &Patch::Merge(json!({"spec": {"paused": true}}))).await.unwrap();
    eventually(120, "Paused=True again", || async { (condition_reason(&machines.get("m1").await.ok()?, "Paused")? == "Paused").then_some(()) })
        .await
        .unwrap();
    machines.delete("m1", &DeleteParams::default()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    assert_eq!(bed.farm.exec_ok(0, "cat /run/cluster-api/bootstrap-success.complete").unwrap(), "success\n", "the host was not reset");
    let host = Api::<SSHHost>::namespaced(bed.client.clone(), NS).get("h0").await.unwrap();
    assert_eq!(host.spec.consumer_ref.map(|c| c.name).as_deref(), Some("m1"), "the claim stays for the move target");
}

#[tokio::test]
async fn a_swapped_host_key_is_reported_and_nothing_runs() {
    let mut bed = bed("swapped-key", 1).await;
    let hosts: Api<SSHHost> = Api::namespaced(bed.client.clone(), NS);
    // The state right after a claim: the host is the machine's; then the host is reinstalled.
    // A merge patch: the manager may be writing the host's finalizer or first status meanwhile.
    let claim = json!({"spec": {"consumerRef": capssh::hosts::claim::consumer("m1", None)}});
    hosts.patch("h0", &PatchParams::default(), &Patch::Merge(&claim)).await.unwrap();
    let old = bed.farm.hosts[0].host_key_fingerprint.clone();
    bed.farm.replace_host_key(0).unwrap();
    // A reinstall reboots the host: connections opened before (by the host probe) are gone.
    bed.farm.drop_sessions(0).unwrap();
    scenario::machine(&bed.client, NS, "c1", "m1", &counting_bootstrap(0)).await.unwrap();

    let machines: Api<SSHMachine> = Api::namespaced(bed.client.clone(), NS);
    let found = eventually(120, "HostConnected=False HostKeyMismatch", || async {
        let m = machines.get("m1").await.ok()?;
        (condition_reason(&m, "HostConnected")? == "HostKeyMismatch").then_some(m)
    })
    .await;
    let m = match found {
        Ok(m) => m,
        Err(err) => panic!("{err}: {:?}; host {:?}", machines.get("m1").await.unwrap().status, hosts.get("h0").await.unwrap()),
    };
    let message = condition_message(&m, "HostConnected");
    assert!(message.contains(&old) && message.contains(&bed.farm.hosts[0].host_key_fingerprint), "{message}");
    assert!(bed.farm.exec(0, "ls /var/lib/capssh/jobs 2>/dev/null").unwrap().stdout.is_empty(), "nothing ran on the host");
    let _ = index(&bed.farm, "h0");
}

#[tokio::test]
async fn bad_bootstrap_data_is_reported_and_nothing_runs() {
    let bed = bed("bad-bootstrap", 1).await;
    let machines: Api<SSHMachine> = Api::namespaced(bed.client.clone(), NS);
    scenario::machine(&bed.client, NS, "c1", "m1", "#cloud-config\nmounts:\n  - [/dev/sdb, /data]\nruncmd:\n  - touch /run/ran\n").await.unwrap();
    let m = eventually(120, "BootstrapDataInvalid", || async {
        let m = machines.get("m1").await.ok()?;
        (condition_reason(&m, "BootstrapSucceeded")? == "BootstrapDataInvalid").then_some(m)
    })
    .await
    .unwrap();
    assert!(condition_message(&m, "BootstrapSucceeded").contains("mounts"), "{}", condition_message(&m, "BootstrapSucceeded"));

    // A Machine pointing at a bootstrap Secret that does not exist.
    let owner = capssh_e2e::apply::apply_one(
        &bed.client,
        &json!({
            "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
            "metadata": {"name": "m2", "labels": {"cluster.x-k8s.io/cluster-name": "c1"}},
            "spec": {"clusterName": "c1", "bootstrap": {"dataSecretName": "missing"},
                     "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "SSHMachine", "name": "m2"}}
        }),
        Some(NS),
        false,
    )
    .await
    .unwrap();
    capssh_e2e::apply::apply_one(
        &bed.client,
        &json!({
            "apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "SSHMachine",
            "metadata": {"name": "m2", "labels": {"cluster.x-k8s.io/cluster-name": "c1"},
                         "ownerReferences": [{"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine", "name": "m2", "uid": owner.metadata.uid}]},
            "spec": {}
        }),
        Some(NS),
        false,
    )
    .await
    .unwrap();
    let m2 = eventually(120, "the missing Secret reported", || async {
        let m = machines.get("m2").await.ok()?;
        (condition_reason(&m, "BootstrapSucceeded")? == "BootstrapDataInvalid").then_some(m)
    })
    .await
    .unwrap();
    assert!(condition_message(&m2, "BootstrapSucceeded").contains("does not exist"));
    assert!(bed.farm.exec(0, "ls /var/lib/capssh/jobs 2>/dev/null; ls /run/ran 2>/dev/null").unwrap().stdout.is_empty(), "nothing ran");
}

#[tokio::test]
async fn a_host_gone_dark_since_its_probe_is_not_claimed_and_the_machine_takes_another() {
    // Probes minutes apart: the pool still believes the dark host Available.
    let bed = bed_with("gone-dark", 2, &["--probe-interval-seconds", "300"]).await;
    let hosts: Api<SSHHost> = Api::namespaced(bed.client.clone(), NS);
    let machines: Api<SSHMachine> = Api::namespaced(bed.client.clone(), NS);
    eventually(60, "both hosts Available", || async {
        let list = hosts.list(&Default::default()).await.ok()?;
        list.items.iter().all(|h| h.status.as_ref().and_then(|s| s.phase) == Some(capssh::api::v1alpha1::HostPhase::Available)).then_some(())
    })
    .await
    .unwrap();
    bed.farm.set_link(0, false).unwrap();
    scenario::machine(&bed.client, NS, "c1", "m1", &counting_bootstrap(0)).await.unwrap();
    scenario::machine(&bed.client, NS, "c1", "m2", &counting_bootstrap(0)).await.unwrap();

    // One machine gets h1; the other can only have chosen h0, and must not have claimed it.
    let dark = bed.farm.hosts[0].name.clone();
    let live = bed.farm.hosts[1].name.clone();
    let told = |m: &SSHMachine| {
        let reason = condition_reason(m, "HostClaimed").unwrap_or_default();
        reason == "ChosenHostDidNotAnswer" || (reason == "NoHostAvailable" && condition_message(m, "HostClaimed").contains("did not answer"))
    };
    let waiting = eventually(120, "one machine provisioned on the live host, the other told the dark one did not answer", || async {
        let (a, b) = (machines.get("m1").await.ok()?, machines.get("m2").await.ok()?);
        let on_live = |m: &SSHMachine| provisioned(m) && m.spec.host_ref.as_ref().map(|h| h.name.as_str()) == Some(live.as_str());
        if on_live(&a) && told(&b) {
            Some(b)
        } else if on_live(&b) && told(&a) {
            Some(a)
        } else {
            None
        }
    })
    .await
    .unwrap();
    assert!(waiting.spec.host_ref.is_none(), "nothing recorded for the waiting machine: {:?}", waiting.spec.host_ref);
    let dark_host = hosts.get(&dark).await.unwrap();
    assert!(dark_host.spec.consumer_ref.is_none(), "the dark host was claimed: {:?}", dark_host.spec.consumer_ref);
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(bed.client.clone(), NS);
    let warned = events.list(&Default::default()).await.unwrap().items.into_iter().any(|e| {
        e.reason.as_deref() == Some("ChosenHostDidNotAnswer")
            && e.type_.as_deref() == Some("Warning")
            && e.message.unwrap_or_default().contains(&dark)
    });
    assert!(warned, "a Warning event names the host that did not answer");
    assert!(bed.farm.exec(0, "ls /var/lib/capssh/jobs 2>/dev/null").unwrap().stdout.is_empty(), "nothing ran on the dark host");
    bed.farm.set_link(0, true).unwrap();
}

#[tokio::test]
async fn a_host_that_cannot_be_reset_is_quarantined_and_the_delete_completes() {
    let bed = bed_with("quarantine", 1, &["--cleanup-give-up-seconds", "10"]).await;
    let machines: Api<SSHMachine> = Api::namespaced(bed.client.clone(), NS);
    let hosts: Api<SSHHost> = Api::namespaced(bed.client.clone(), NS);
    scenario::machine(&bed.client, NS, "c1", "m1", &counting_bootstrap(0)).await.unwrap();
    eventually(120, "provisioned", || async { provisioned(&machines.get("m1").await.ok()?).then_some(()) }).await.unwrap();

    // The host drops off the network, then its machine is deleted.
    bed.farm.set_link(0, false).unwrap();
    machines.delete("m1", &DeleteParams::default()).await.unwrap();
    eventually(120, "the SSHMachine to be gone (the delete must not hang)", || async { machines.get_opt("m1").await.ok()?.is_none().then_some(()) })
        .await
        .unwrap();
    let host = eventually(60, "the host quarantined", || async {
        let h = hosts.get("h0").await.ok()?;
        (h.status.as_ref()?.phase == Some(capssh::api::v1alpha1::HostPhase::Quarantined)).then_some(h)
    })
    .await
    .unwrap();
    let reason = host.metadata.annotations.unwrap_or_default().get(capssh::controllers::QUARANTINE_ANNOTATION).cloned().unwrap_or_default();
    assert!(reason.contains(&bed.farm.hosts[0].address.to_string()), "the reason names the host: {reason}");
    assert_eq!(host.spec.consumer_ref.map(|c| c.name).as_deref(), Some("m1"), "a quarantined host keeps its claim");

    // Back on the network, it is still not handed out: a person must look at it first.
    bed.farm.set_link(0, true).unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let host = hosts.get("h0").await.unwrap();
    assert_eq!(host.status.and_then(|s| s.phase), Some(capssh::api::v1alpha1::HostPhase::Quarantined));
    // Whether the host's files are still there is not asserted: a reset requested just as the link
    // went down can still be delivered when it comes back (TCP retransmits it). That is harmless:
    // the promise is that the host stays out of the pool, which is what is checked above.

    // A machine recreated with the same name (and the same bootstrap Secret, so the same job id)
    // is another consumer: it does not get the quarantined host back, nor is it reported
    // provisioned from the old machine's records.
    let runs_before = bed.farm.exec_ok(0, "cat /var/lib/capssh/bootstrap-count 2>/dev/null; true").unwrap();
    let owner =
        Api::<DynamicObject>::namespaced_with(bed.client.clone(), NS, &capssh::controllers::capi::machine_resource()).get("m1").await.unwrap();
    capssh_e2e::apply::apply_one(
        &bed.client,
        &json!({
            "apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "SSHMachine",
            "metadata": {"name": "m1", "labels": {"cluster.x-k8s.io/cluster-name": "c1"},
                         "ownerReferences": [{"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine", "name": "m1", "uid": owner.metadata.uid}]},
            "spec": {}
        }),
        Some(NS),
        false,
    )
    .await
    .unwrap();
    let m = eventually(60, "the recreated machine waiting for a host", || async {
        let m = machines.get("m1").await.ok()?;
        (condition_reason(&m, "HostClaimed")? == "NoHostAvailable").then_some(m)
    })
    .await
    .unwrap();
    assert!(condition_message(&m, "HostClaimed").contains("1 claimed"), "{}", condition_message(&m, "HostClaimed"));
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let m = machines.get("m1").await.unwrap();
    assert!(!provisioned(&m), "never reported provisioned from another machine's records");
    assert_eq!(m.spec.host_ref, None);
    assert_eq!(bed.farm.exec_ok(0, "cat /var/lib/capssh/bootstrap-count 2>/dev/null; true").unwrap(), runs_before, "nothing ran on the host");
}

/// `clusterctl move` while a machine's host was being reset: the source's reset finishes on the
/// host, and the copy the target gets (same spec, no status) must not bootstrap the wiped host
/// again. It says so; deleting it releases the host.
#[tokio::test]
async fn a_moved_copy_of_a_machine_whose_host_was_reset_is_not_bootstrapped_again() {
    use capssh::bootstrap::scripts::RESET;
    use capssh::hosts::work::reset_job_id;
    use capssh::ssh::job::{JobSpec, JobState};
    let bed = bed("moved-mid-reset", 1).await;
    let machines: Api<SSHMachine> = Api::namespaced(bed.client.clone(), NS);
    let hosts: Api<SSHHost> = Api::namespaced(bed.client.clone(), NS);
    scenario::machine(&bed.client, NS, "c1", "m1", &counting_bootstrap(0)).await.unwrap();
    eventually(120, "provisioned", || async { provisioned(&machines.get("m1").await.ok()?).then_some(()) }).await.unwrap();

    // The source: move pauses the Cluster; the reset its deletion had begun runs to its end.
    let clusters = Api::<DynamicObject>::namespaced_with(bed.client.clone(), NS, &capssh::controllers::capi::cluster_resource());
    clusters.patch("c1", &PatchParams::default(), &Patch::Merge(json!({"spec": {"paused": true}}))).await.unwrap();
    eventually(120, "Paused=True", || async { (condition_reason(&machines.get("m1").await.ok()?, "Paused")? == "Paused").then_some(()) })
        .await
        .unwrap();
    let original = machines.get("m1").await.unwrap();
    let host = hosts.get("h0").await.unwrap();
    let (target, _) = capssh::controllers::target_for(&bed.client, &host).await.unwrap();
    let session = capssh::ssh::Session::connect(&target, &capssh::ssh::Timeouts::default()).await.unwrap();
    let reset_id = reset_job_id(NS, "m1", "h0");
    session.start_job(&JobSpec { id: &reset_id, script: RESET.as_bytes(), required: &[] }).await.unwrap();
    eventually(60, "the reset to finish", || async {
        matches!(session.job_status(&reset_id, &[]).await.ok()?.state, JobState::Finished { .. }).then_some(())
    })
    .await
    .unwrap();

    // The hand-over, as clusterctl does it: the source object is marked, deleted and its
    // finalizers stripped; the target gets the same metadata and spec, without status.
    let moving = json!({"metadata": {"annotations": {"clusterctl.cluster.x-k8s.io/delete-for-move": ""}}});
    machines.patch("m1", &PatchParams::default(), &Patch::Merge(moving)).await.unwrap();
    machines.delete("m1", &DeleteParams::default()).await.unwrap();
    machines.patch("m1", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": null}}))).await.unwrap();
    eventually(60, "the source object gone", || async { machines.get_opt("m1").await.ok()?.is_none().then_some(()) }).await.unwrap();
    let copy: SSHMachine = serde_json::from_value(json!({
        "metadata": {"name": "m1", "labels": original.metadata.labels, "ownerReferences": original.metadata.owner_references},
        "spec": original.spec,
    }))
    .unwrap();
    machines.create(&PostParams::default(), &copy).await.unwrap();
    clusters.patch("c1", &PatchParams::default(), &Patch::Merge(json!({"spec": {"paused": false}}))).await.unwrap();

    let m = eventually(120, "HostAlreadyReset", || async {
        let m = machines.get("m1").await.ok()?;
        (condition_reason(&m, "BootstrapSucceeded")? == "HostAlreadyReset").then_some(m)
    })
    .await
    .unwrap();
    assert_eq!(m.status.as_ref().and_then(|s| s.phase), Some(MachinePhase::Failed));
    assert!(condition_message(&m, "BootstrapSucceeded").contains("Delete the Machine"), "{}", condition_message(&m, "BootstrapSucceeded"));
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(bed.farm.exec_ok(0, "cat /var/lib/capssh/bootstrap-count").unwrap(), "ran\n", "the wiped host was not bootstrapped again");
    assert!(bed.farm.exec(0, "ls /run/cluster-api/bootstrap-success.complete").unwrap().stdout.is_empty(), "the host stays reset");

    // Deleting it verifies the (finished) reset, forgets it and releases the host.
    machines.delete("m1", &DeleteParams::default()).await.unwrap();
    eventually(120, "the host released", || async { hosts.get("h0").await.ok()?.spec.consumer_ref.is_none().then_some(()) }).await.unwrap();
    let journal = bed.farm.exec_ok(0, "cat /var/lib/capssh/jobs/journal").unwrap();
    assert_eq!(journal.matches(&reset_id).count(), 1, "the reset ran once:\n{journal}");
    assert_eq!(journal.matches(" bootstrap-").count(), 1, "one bootstrap:\n{journal}");
    assert!(
        bed.farm.exec(0, &format!("ls -d /var/lib/capssh/jobs/{reset_id}")).unwrap().stdout.is_empty(),
        "the reset's record is forgotten at release"
    );

    // Which is what lets a new machine of the same name use the host like any other.
    let owners = Api::<DynamicObject>::namespaced_with(bed.client.clone(), NS, &capssh::controllers::capi::machine_resource());
    owners.delete("m1", &DeleteParams::default()).await.unwrap();
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(bed.client.clone(), NS).delete("m1-bootstrap", &DeleteParams::default()).await.unwrap();
    eventually(60, "the old Machine gone", || async { owners.get_opt("m1").await.ok()?.is_none().then_some(()) }).await.unwrap();
    scenario::machine(&bed.client, NS, "c1", "m1", &counting_bootstrap(0)).await.unwrap();
    eventually(120, "the new m1 provisioned", || async { provisioned(&machines.get("m1").await.ok()?).then_some(()) }).await.unwrap();
    assert_eq!(bed.farm.exec_ok(0, "cat /var/lib/capssh/bootstrap-count").unwrap(), "ran\nran\n", "the new machine bootstrapped the host");
}

/// Ready is kept current for a machine's whole life: once provisioned, its host is checked every
/// health interval; a host that stops answering shows as Ready False with the reason (and a
/// Warning event), the phase stays Provisioned, and Ready is True again once it answers.
#[tokio::test]
async fn a_provisioned_machine_shows_a_host_that_stops_answering_and_its_recovery() {
    let bed = bed_with("health", 1, &["--health-check-interval-seconds", "2"]).await;
    let machines: Api<SSHMachine> = Api::namespaced(bed.client.clone(), NS);
    scenario::machine(&bed.client, NS, "c1", "m1", &counting_bootstrap(0)).await.unwrap();
    eventually(120, "provisioned", || async { provisioned(&machines.get("m1").await.ok()?).then_some(()) }).await.unwrap();
    assert_eq!(condition_reason(&machines.get("m1").await.unwrap(), "Ready").as_deref(), Some("Provisioned"));

    // The host goes away: no sshd, its open connections cut (as a crash or a reboot does).
    bed.farm.stop_sshd(0).unwrap();
    bed.farm.drop_sessions(0).unwrap();
    let down = eventually(60, "Ready=False HostUnreachable", || async {
        let m = machines.get("m1").await.ok()?;
        (condition_reason(&m, "Ready")? == "HostUnreachable").then_some(m)
    })
    .await
    .unwrap();
    assert_eq!(down.status.as_ref().and_then(|s| s.phase), Some(MachinePhase::Provisioned), "nothing was undone");
    assert_eq!(condition_reason(&down, "HostConnected").as_deref(), Some("HostUnreachable"));
    assert!(condition_message(&down, "Ready").contains("h0"), "the message names the host: {}", condition_message(&down, "Ready"));
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(bed.client.clone(), NS);
    eventually(30, "a Warning event", || async {
        let list = events.list(&Default::default()).await.ok()?;
        list.items.iter().any(|e| e.reason.as_deref() == Some("HostUnreachable") && e.type_.as_deref() == Some("Warning")).then_some(())
    })
    .await
    .unwrap();

    // Back: Ready again, and the bootstrap did not run a second time.
    bed.farm.start_sshd(0).unwrap();
    eventually(60, "Ready=True again", || async {
        let m = machines.get("m1").await.ok()?;
        (condition_reason(&m, "Ready")? == "Provisioned" && condition_reason(&m, "HostConnected")? == "Connected").then_some(())
    })
    .await
    .unwrap();
    assert_eq!(bed.farm.exec_ok(0, "cat /var/lib/capssh/bootstrap-count").unwrap(), "ran\n");
}

/// Deleting a machine while its bootstrap runs: the job (and everything it started) is stopped
/// before the reset, so no `kubeadm join` can finish after the host was released.
#[tokio::test]
async fn deleting_a_machine_mid_bootstrap_stops_the_job_before_the_reset() {
    let bed = bed("delete-mid-bootstrap", 1).await;
    let machines: Api<SSHMachine> = Api::namespaced(bed.client.clone(), NS);
    let hosts: Api<SSHHost> = Api::namespaced(bed.client.clone(), NS);
    let slow = "#cloud-config\nruncmd:\n  - echo ran >> /var/lib/capssh/bootstrap-count\n  - sleep 347\n  - touch /var/lib/capssh/joined-late\n  - mkdir -p /run/cluster-api && echo success > /run/cluster-api/bootstrap-success.complete\n";
    scenario::machine(&bed.client, NS, "c1", "m1", slow).await.unwrap();
    eventually(120, "the bootstrap running", || async { bed.farm.exec_ok(0, "cat /var/lib/capssh/bootstrap-count").ok().filter(|c| c == "ran\n") })
        .await
        .unwrap();

    machines.delete("m1", &DeleteParams::default()).await.unwrap();
    eventually(120, "the host released", || async { hosts.get("h0").await.ok()?.spec.consumer_ref.is_none().then_some(()) }).await.unwrap();
    let sleeping = std::process::Command::new("pgrep").args(["-f", "sleep 347"]).output().unwrap();
    assert!(sleeping.stdout.is_empty(), "the bootstrap's processes were stopped before the release");
    assert!(bed.farm.exec(0, "ls /var/lib/capssh/joined-late").unwrap().stdout.is_empty(), "nothing after the stop ran");
    let journal = bed.farm.exec_ok(0, "cat /var/lib/capssh/jobs/journal").unwrap();
    let bootstrap = journal.find(" bootstrap-").expect("the bootstrap started");
    let reset = journal.find(" cleanup-").expect("the reset started");
    assert!(bootstrap < reset, "{journal}");
    eventually(60, "the machine gone", || async { machines.get_opt("m1").await.ok()?.is_none().then_some(()) }).await.unwrap();
}

/// A provisioned machine whose host rebooted (Cluster API's sentinel lived in /run, now empty)
/// and which is then judged afresh (a copy made by `clusterctl move` has no status): still
/// provisioned, from the success capssh recorded on the host's disk, and nothing runs again.
#[tokio::test]
async fn a_reboot_then_a_move_does_not_fail_a_healthy_machine() {
    let bed = bed("reboot-then-move", 1).await;
    let machines: Api<SSHMachine> = Api::namespaced(bed.client.clone(), NS);
    scenario::machine(&bed.client, NS, "c1", "m1", &counting_bootstrap(0)).await.unwrap();
    eventually(120, "provisioned", || async { provisioned(&machines.get("m1").await.ok()?).then_some(()) }).await.unwrap();

    bed.farm.exec_ok(0, "rm -rf /run/cluster-api").unwrap();
    // What the target of a move sees: the same spec, no status.
    machines.patch_status("m1", &PatchParams::default(), &Patch::Merge(json!({"status": null}))).await.unwrap();
    let m = eventually(120, "provisioned again", || async {
        let m = machines.get("m1").await.ok()?;
        provisioned(&m).then_some(m)
    })
    .await
    .unwrap();
    assert_eq!(condition_reason(&m, "BootstrapSucceeded").as_deref(), Some("Succeeded"));
    assert_eq!(bed.farm.exec_ok(0, "cat /var/lib/capssh/bootstrap-count").unwrap(), "ran\n", "the bootstrap ran once");
}

/// The manager stopped between claiming a host (written on the SSHHost) and recording it in the
/// machine's spec.hostRef; then the machine is deleted. The claim carries the machine's UID,
/// which ties the host back to it: the host is reset and returned, not left claimed forever.
#[tokio::test]
async fn a_claim_not_yet_recorded_in_the_machine_is_released_when_the_machine_goes() {
    let mut bed = bed("claim-not-recorded", 1).await;
    let machines: Api<SSHMachine> = Api::namespaced(bed.client.clone(), NS);
    let hosts: Api<SSHHost> = Api::namespaced(bed.client.clone(), NS);
    eventually(120, "the host Available", || async {
        (hosts.get("h0").await.ok()?.status?.phase == Some(capssh::api::v1alpha1::HostPhase::Available)).then_some(())
    })
    .await
    .unwrap();
    bed.manager.as_mut().unwrap().kill();

    // What the stopped manager left: its finalizer on the machine, its claim on the host.
    scenario::machine(&bed.client, NS, "c1", "m1", &counting_bootstrap(0)).await.unwrap();
    let finalizer = json!({"metadata": {"finalizers": [capssh::controllers::sshmachine::FINALIZER]}});
    let machine = machines.patch("m1", &PatchParams::default(), &Patch::Merge(&finalizer)).await.unwrap();
    let mut host = hosts.get("h0").await.unwrap();
    host.spec.consumer_ref = Some(capssh::hosts::claim::consumer("m1", machine.metadata.uid.as_deref()));
    hosts.replace("h0", &PostParams::default(), &host).await.unwrap();
    assert_eq!(machine.spec.host_ref, None);
    machines.delete("m1", &DeleteParams::default()).await.unwrap();

    bed.manager = Some(start_manager(&bed.plane, "capssh-restarted", &["--probe-interval-seconds", "2"]).unwrap());
    eventually(120, "the machine gone", || async { machines.get_opt("m1").await.ok()?.is_none().then_some(()) }).await.unwrap();
    let host = eventually(60, "the host released and Available", || async {
        let h = hosts.get("h0").await.ok()?;
        (h.spec.consumer_ref.is_none() && h.status.as_ref()?.phase == Some(capssh::api::v1alpha1::HostPhase::Available)).then_some(h)
    })
    .await
    .unwrap();
    assert!(!host.metadata.annotations.unwrap_or_default().contains_key(capssh::controllers::QUARANTINE_ANNOTATION));
    let journal = bed.farm.exec_ok(0, "cat /var/lib/capssh/jobs/journal").unwrap();
    assert!(journal.contains(" cleanup-") && !journal.contains(" bootstrap-"), "reset before release, nothing else ran: {journal}");
}
