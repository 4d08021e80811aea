//! The SSHHost controller against a real kube-apiserver and real sshd hosts: probing into
//! status, pinning a key on first use, refusing a wrong key, maintenance and quarantine.

use capssh::api::v1alpha1::{HostPhase, SSHHost};
use capssh::controllers::QUARANTINE_ANNOTATION;
use capssh_e2e::capi::install_capssh_crds;
use capssh_e2e::hosts::HostFarm;
use capssh_e2e::manager::{eventually, start_manager};
use capssh_e2e::mgmt::ManagementPlane;
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

const NS: &str = "hosts";

fn host_object(name: &str, address: &str, host_key: serde_json::Value) -> SSHHost {
    serde_json::from_value(json!({
        "apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "SSHHost",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"address": address, "auth": {"privateKeySecretRef": {"name": "farm-key"}}, "hostKey": host_key}
    }))
    .unwrap()
}

/// A host farm, a management plane with our CRDs, the namespace and the farm's key Secret.
async fn setup(suite: &str, hosts: usize) -> (HostFarm, ManagementPlane, kube::Client) {
    let farm = HostFarm::start(suite, hosts).unwrap();
    let plane = ManagementPlane::start(suite).await.unwrap();
    let client = plane.client().await.unwrap();
    install_capssh_crds(&client).await.unwrap();
    capssh_e2e::scenario::namespace(&client, NS).await.unwrap();
    capssh_e2e::scenario::farm_key_secret(&client, NS, &farm).await.unwrap();
    (farm, plane, client)
}

async fn phase_of(api: &Api<SSHHost>, name: &str) -> Option<HostPhase> {
    api.get(name).await.ok().and_then(|h| h.status).and_then(|s| s.phase)
}

#[tokio::test]
async fn hosts_are_probed_pinned_refused_and_quarantined() {
    let (farm, plane, client) = setup("host-controller", 3).await;
    let _manager = start_manager(&plane, "capssh", &["--probe-interval-seconds", "2"]).unwrap();

    let api: Api<SSHHost> = Api::namespaced(client.clone(), NS);
    let address = |i: usize| farm.hosts[i].address.to_string();
    let pinned = host_object("pinned", &address(0), json!({"publicKeys": [farm.hosts[0].host_key_public]}));
    let tofu = host_object("tofu", &address(1), json!({"trustOnFirstUse": true}));
    let wrong = host_object("wrong-key", &address(2), json!({"publicKeys": [farm.hosts[0].host_key_public]}));
    for host in [&pinned, &tofu, &wrong] {
        api.create(&PostParams::default(), host).await.unwrap();
    }

    // A pinned, reachable host becomes Available with its facts.
    let probed = eventually(60, "the pinned host to be Available", || async {
        let host = api.get("pinned").await.ok()?;
        (host.status.as_ref()?.phase == Some(HostPhase::Available)).then_some(host)
    })
    .await
    .unwrap();
    let status = probed.status.unwrap();
    assert_eq!(status.facts.as_ref().unwrap().hostname, farm.hosts[0].name);
    assert_eq!(status.observed_host_key_fingerprint.as_deref(), Some(farm.hosts[0].host_key_fingerprint.as_str()));
    let ready = status.conditions.iter().find(|c| c.r#type == "Ready").unwrap();
    assert_eq!((ready.status, ready.reason.as_str()), (capssh::api::v1alpha1::ConditionStatus::True, "Available"));

    // Trust on first use: the seen key is recorded in spec and pinned from then on.
    let pinned_key = eventually(60, "the key seen on first use to be pinned", || async {
        let host = api.get("tofu").await.ok()?;
        host.spec.host_key.public_keys.first().cloned()
    })
    .await
    .unwrap();
    assert!(farm.hosts[1].host_key_public.starts_with(pinned_key.split(' ').take(2).collect::<Vec<_>>().join(" ").as_str()));
    eventually(60, "the TOFU host to be Available", || async { (phase_of(&api, "tofu").await == Some(HostPhase::Available)).then_some(()) })
        .await
        .unwrap();

    // Another host's key: refused, both fingerprints in the condition, and a Warning event.
    let refused = eventually(60, "the wrong-key host to be refused", || async {
        let host = api.get("wrong-key").await.ok()?;
        let condition = host.status?.conditions.into_iter().find(|c| c.r#type == "Reachable")?;
        (condition.reason == "HostKeyMismatch").then_some(condition)
    })
    .await
    .unwrap();
    assert!(refused.message.contains(&farm.hosts[2].host_key_fingerprint), "{}", refused.message);
    assert!(refused.message.contains(&farm.hosts[0].host_key_fingerprint), "{}", refused.message);
    assert_eq!(phase_of(&api, "wrong-key").await, Some(HostPhase::Unreachable));
    let events = Api::<Event>::namespaced(client.clone(), NS);
    eventually(30, "a HostKeyMismatch event", || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find(|e| e.reason.as_deref() == Some("HostKeyMismatch") && e.type_.as_deref() == Some("Warning"))
    })
    .await
    .unwrap();

    // Maintenance keeps the host probed but says it is not selected.
    api.patch("pinned", &PatchParams::default(), &Patch::Merge(json!({"spec": {"maintenance": true}}))).await.unwrap();
    eventually(30, "the Maintenance reason", || async {
        let host = api.get("pinned").await.ok()?;
        host.status?.conditions.into_iter().find(|c| c.r#type == "Ready" && c.reason == "Maintenance")
    })
    .await
    .unwrap();

    // A quarantined host is never probed into Available.
    let annotation = json!({"metadata": {"annotations": {QUARANTINE_ANNOTATION: "cleanup could not verify the host"}}});
    api.patch("tofu", &PatchParams::default(), &Patch::Merge(annotation)).await.unwrap();
    eventually(30, "the quarantined phase", || async { (phase_of(&api, "tofu").await == Some(HostPhase::Quarantined)).then_some(()) }).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(phase_of(&api, "tofu").await, Some(HostPhase::Quarantined), "a probe must not release a quarantined host");
}

#[tokio::test]
async fn a_watch_filter_limits_the_manager_to_labelled_objects() {
    let (farm, plane, client) = setup("watch-filter", 1).await;
    let _manager = start_manager(&plane, "capssh", &["--watch-filter", "team-a", "--probe-interval-seconds", "2"]).unwrap();

    let api: Api<SSHHost> = Api::namespaced(client.clone(), NS);
    let pin = json!({"publicKeys": [farm.hosts[0].host_key_public]});
    let mut mine = host_object("mine", &farm.hosts[0].address.to_string(), pin.clone());
    mine.metadata.labels = Some([("cluster.x-k8s.io/watch-filter".to_string(), "team-a".to_string())].into());
    let others = host_object("others", &farm.hosts[0].address.to_string(), pin);
    api.create(&PostParams::default(), &mine).await.unwrap();
    api.create(&PostParams::default(), &others).await.unwrap();
    eventually(60, "the labelled host to be probed", || async { (phase_of(&api, "mine").await == Some(HostPhase::Available)).then_some(()) })
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert!(api.get("others").await.unwrap().status.is_none(), "an unlabelled host is another manager's");
}

#[tokio::test]
async fn with_leader_election_only_one_replica_reconciles_and_the_other_takes_over() {
    let (farm, plane, client) = setup("leader-election", 1).await;
    let args = ["--leader-elect", "--leader-election-namespace", "default", "--probe-interval-seconds", "2"];
    let mut first = start_manager(&plane, "replica-1", &args).unwrap();
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(client.clone(), "default");
    let holder = eventually(60, "a leader", || async { leases.get_opt("capssh-leader").await.ok()??.spec?.holder_identity }).await.unwrap();
    assert_eq!(holder, format!("capssh-{}", first.pid()));
    let second = start_manager(&plane, "replica-2", &args).unwrap();

    let api: Api<SSHHost> = Api::namespaced(client.clone(), NS);
    let pin = json!({"publicKeys": [farm.hosts[0].host_key_public]});
    api.create(&PostParams::default(), &host_object("a", &farm.hosts[0].address.to_string(), pin.clone())).await.unwrap();
    eventually(60, "host a probed", || async { (phase_of(&api, "a").await == Some(HostPhase::Available)).then_some(()) }).await.unwrap();
    let follower_log = std::fs::read_to_string(plane.dir.join("replica-2.log")).unwrap();
    assert!(!follower_log.contains("became the leader"), "the second replica must wait");
    let leader_log = std::fs::read_to_string(plane.dir.join("replica-1.log")).unwrap();
    assert!(leader_log.contains("\"message\":\"reconcile\""), "the leader logs its reconciles");
    assert!(!follower_log.contains("\"message\":\"reconcile\""), "the follower reconciled something:\n{follower_log}");

    // The leader dies; the follower takes the lease over and carries on.
    first.kill();
    eventually(60, "the second replica to lead", || async {
        let holder = leases.get_opt("capssh-leader").await.ok()??.spec?.holder_identity?;
        (holder == format!("capssh-{}", second.pid())).then_some(())
    })
    .await
    .unwrap();
    api.create(&PostParams::default(), &host_object("b", &farm.hosts[0].address.to_string(), pin)).await.unwrap();
    eventually(60, "host b probed by the new leader", || async { (phase_of(&api, "b").await == Some(HostPhase::Available)).then_some(()) })
        .await
        .unwrap();
}
