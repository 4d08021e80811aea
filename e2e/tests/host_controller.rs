//! The SSHHost controller against a real kube-apiserver and real sshd hosts: probing into
//! status, pinning a key on first use, refusing a wrong key, maintenance and quarantine;
//! credential Secrets only when marked for capssh; the finalizer that keeps a claimed host
//! until it is released, the CRD rules that keep a claimed host's identity, and the owner
//! record that catches two SSHHosts for one box. Every manager here runs as a user holding
//! exactly capssh's RBAC from config/rbac, and none of its requests may be refused.

use capssh::api::v1alpha1::{CREDENTIALS_LABEL, HostPhase, SSHHost};
use capssh::controllers::QUARANTINE_ANNOTATION;
use capssh_e2e::capi::install_capssh_crds;
use capssh_e2e::hosts::HostFarm;
use capssh_e2e::manager::eventually;
use capssh_e2e::mgmt::ManagementPlane;
use capssh_e2e::process::Daemon;
use k8s_openapi::api::core::v1::{Event, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use std::path::PathBuf;

const NS: &str = "hosts";
/// Where the leader-election tests keep their Lease (the manager's Role is bound there).
const LEASE_NS: &str = "default";
const FINALIZER: &str = "sshhost.infrastructure.cluster.x-k8s.io";

fn host_object(name: &str, address: &str, host_key: serde_json::Value) -> SSHHost {
    host_with_secret(name, address, host_key, "farm-key")
}

fn host_with_secret(name: &str, address: &str, host_key: serde_json::Value, secret: &str) -> SSHHost {
    serde_json::from_value(json!({
        "apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "SSHHost",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"address": address, "auth": {"privateKeySecretRef": {"name": secret}}, "hostKey": host_key}
    }))
    .unwrap()
}

/// A host farm, a management plane with our CRDs, the namespace, the farm's key Secret, and a
/// kubeconfig for a user holding exactly capssh's RBAC.
struct Bed {
    farm: HostFarm,
    plane: ManagementPlane,
    client: kube::Client,
    manager_kubeconfig: PathBuf,
}

async fn setup(suite: &str, hosts: usize) -> Bed {
    let farm = HostFarm::start(suite, hosts).unwrap();
    let plane = ManagementPlane::start(suite).await.unwrap();
    let client = plane.client().await.unwrap();
    install_capssh_crds(&client).await.unwrap();
    capssh_e2e::scenario::namespace(&client, NS).await.unwrap();
    capssh_e2e::scenario::farm_key_secret(&client, NS, &farm).await.unwrap();
    let manager_kubeconfig = capssh_e2e::scenario::manager_identity(&plane, &client, LEASE_NS).await.unwrap();
    Bed { farm, plane, client, manager_kubeconfig }
}

impl Bed {
    /// `capssh manager` (controllers only) as the RBAC-bound user, logging to `<plane>/<name>.log`.
    fn manager(&self, name: &str, args: &[&str]) -> Daemon {
        use capssh_e2e::tools::{capssh, free_port};
        let mut cmd = std::process::Command::new(capssh());
        cmd.args(["manager", "--webhook-addr", ""])
            .args(["--health-addr", &format!("127.0.0.1:{}", free_port())])
            .args(["--metrics-addr", &format!("127.0.0.1:{}", free_port())])
            .args(args)
            .env("KUBECONFIG", &self.manager_kubeconfig)
            .env("RUST_LOG", "info,capssh=debug");
        Daemon::start(name, cmd, &self.plane.dir.join(format!("{name}.log"))).unwrap()
    }

    /// No request of the manager `name` was refused by the API server's authorization.
    fn assert_never_forbidden(&self, name: &str) {
        let log = std::fs::read_to_string(self.plane.dir.join(format!("{name}.log"))).unwrap();
        let refused: Vec<&str> = log.lines().filter(|l| l.contains("forbidden") || l.contains("Forbidden")).collect();
        assert!(refused.is_empty(), "config/rbac does not grant what the manager does:\n{}", refused.join("\n"));
    }
}

async fn phase_of(api: &Api<SSHHost>, name: &str) -> Option<HostPhase> {
    api.get(name).await.ok().and_then(|h| h.status).and_then(|s| s.phase)
}

fn ready(host: &SSHHost) -> Option<capssh::api::v1alpha1::Condition> {
    host.status.as_ref()?.conditions.iter().find(|c| c.r#type == "Ready").cloned()
}

/// Waits for the SSHHost's Ready condition to have `reason`, and returns it.
async fn ready_reason(api: &Api<SSHHost>, name: &str, reason: &str) -> capssh::api::v1alpha1::Condition {
    let found =
        eventually(60, &format!("{name}: Ready reason {reason}"), || async { ready(&api.get(name).await.ok()?).filter(|c| c.reason == reason) })
            .await;
    match found {
        Ok(condition) => condition,
        Err(err) => panic!("{err}: {:?}", api.get(name).await.map(|h| h.status)),
    }
}

/// A Warning event with `reason` on the SSHHost `name`.
async fn warning_event(client: &kube::Client, name: &str, reason: &str) -> Event {
    let events = Api::<Event>::namespaced(client.clone(), NS);
    eventually(30, &format!("a Warning {reason} event on {name}"), || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some(reason) && e.type_.as_deref() == Some("Warning") && e.involved_object.name.as_deref() == Some(name))
    })
    .await
    .unwrap()
}

/// Marks the SSHHost with an annotation: a watch event, as any edit by a person would be.
async fn nudge(api: &Api<SSHHost>, name: &str, value: &str) {
    let patch = json!({"metadata": {"annotations": {"capssh-e2e/nudge": value}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(patch)).await.unwrap();
}

#[tokio::test]
async fn hosts_are_probed_pinned_refused_and_quarantined() {
    let bed = setup("host-controller", 3).await;
    let (farm, client) = (&bed.farm, &bed.client);
    let _manager = bed.manager("capssh", &["--probe-interval-seconds", "2"]);

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

    // Probed every 2 s, an idle host's status does not change, so it is not written: its
    // resourceVersion stays (Cluster API's e2e checks that a cluster's objects stop changing).
    // It is still probed: its link goes down, and it turns Unreachable.
    let version = api.get("pinned").await.unwrap().metadata.resource_version;
    tokio::time::sleep(std::time::Duration::from_secs(7)).await;
    let idle = api.get("pinned").await.unwrap();
    assert_eq!(idle.metadata.resource_version, version, "an idle host's status was written: {:?}", idle.status);
    farm.set_link(0, false).unwrap();
    eventually(60, "the pinned host, its link down, Unreachable", || async {
        (phase_of(&api, "pinned").await == Some(HostPhase::Unreachable)).then_some(())
    })
    .await
    .unwrap();
    farm.set_link(0, true).unwrap();
    eventually(60, "the pinned host Available again", || async { (phase_of(&api, "pinned").await == Some(HostPhase::Available)).then_some(()) })
        .await
        .unwrap();

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
    bed.assert_never_forbidden("capssh");
}

#[tokio::test]
async fn a_watch_filter_limits_the_manager_to_labelled_objects() {
    let bed = setup("watch-filter", 1).await;
    let (farm, client) = (&bed.farm, &bed.client);
    let _manager = bed.manager("capssh", &["--watch-filter", "team-a", "--probe-interval-seconds", "2"]);

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
    bed.assert_never_forbidden("capssh");
}

#[tokio::test]
async fn with_leader_election_only_one_replica_reconciles_and_the_other_takes_over() {
    // Two boxes: one SSHHost each (two SSHHosts for one box would be refused as duplicates).
    let bed = setup("leader-election", 2).await;
    let (farm, plane, client) = (&bed.farm, &bed.plane, &bed.client);
    let args = ["--leader-elect", "--leader-election-namespace", LEASE_NS, "--probe-interval-seconds", "2"];
    let mut first = bed.manager("replica-1", &args);
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(client.clone(), LEASE_NS);
    let holder = eventually(60, "a leader", || async { leases.get_opt("capssh-leader").await.ok()??.spec?.holder_identity }).await.unwrap();
    assert_eq!(holder, format!("capssh-{}", first.pid()));
    let second = bed.manager("replica-2", &args);

    let api: Api<SSHHost> = Api::namespaced(client.clone(), NS);
    let pin = json!({"publicKeys": [farm.hosts[0].host_key_public]});
    api.create(&PostParams::default(), &host_object("a", &farm.hosts[0].address.to_string(), pin)).await.unwrap();
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
    let pin = json!({"publicKeys": [farm.hosts[1].host_key_public]});
    api.create(&PostParams::default(), &host_object("b", &farm.hosts[1].address.to_string(), pin)).await.unwrap();
    eventually(60, "host b probed by the new leader", || async { (phase_of(&api, "b").await == Some(HostPhase::Available)).then_some(()) })
        .await
        .unwrap();

    // Stopped (SIGTERM, as a Pod is), the leader gives the lease up once its controllers stopped:
    // a third replica takes it without waiting out the lease.
    let mut second = second;
    let third = bed.manager("replica-3", &args);
    second.stop(std::time::Duration::from_secs(20));
    let second_log = std::fs::read_to_string(plane.dir.join("replica-2.log")).unwrap();
    assert!(second_log.contains("gave up the leadership"), "the stopped leader kept its lease:\n{second_log}");
    eventually(60, "the third replica to lead", || async {
        let holder = leases.get_opt("capssh-leader").await.ok()??.spec?.holder_identity?;
        (holder == format!("capssh-{}", third.pid())).then_some(())
    })
    .await
    .unwrap();
    bed.assert_never_forbidden("replica-1");
    bed.assert_never_forbidden("replica-2");
    bed.assert_never_forbidden("replica-3");
}

/// An SSHHost may only use a Secret marked for capssh: one naming any other Secret of the
/// namespace is refused, says what to add, and nothing connects to its address (which could be
/// anyone's sshd, collecting the Secret). Marked, the same Secret works.
#[tokio::test]
async fn a_credential_secret_must_be_marked_for_capssh() {
    let bed = setup("unmarked-secret", 1).await;
    let (farm, client) = (&bed.farm, &bed.client);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    // The right key, in a Secret nobody meant for capssh.
    capssh_e2e::scenario::key_secret_marked(client, NS, "team-key", &farm.client_key.ed25519.private_key_pem, false).await.unwrap();
    let _manager = bed.manager("capssh", &["--probe-interval-seconds", "2"]);
    let api: Api<SSHHost> = Api::namespaced(client.clone(), NS);
    let pin = json!({"publicKeys": [farm.hosts[0].host_key_public]});
    api.create(&PostParams::default(), &host_with_secret("h0", &farm.hosts[0].address.to_string(), pin, "team-key")).await.unwrap();

    let refused = ready_reason(&api, "h0", "CredentialsUnavailable").await;
    let fix = format!("kubectl label secret -n {NS} team-key {CREDENTIALS_LABEL}=true");
    assert!(refused.message.starts_with(&format!("Secret {NS}/team-key: is not marked for capssh")), "{}", refused.message);
    assert!(refused.message.contains(&fix), "the message says what to add: {}", refused.message);
    assert_eq!(phase_of(&api, "h0").await, Some(HostPhase::Unreachable));
    let event = warning_event(client, "h0", "CredentialsUnavailable").await;
    assert!(event.message.unwrap_or_default().contains(&fix));
    // Nothing connected with it: the box's sshd saw no connection at all.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let sshd_log = std::fs::read_to_string(&farm.hosts[0].sshd_log).unwrap();
    assert!(!sshd_log.contains("Connection from"), "capssh connected with an unmarked Secret:\n{sshd_log}");
    let secret = secrets.get("team-key").await.unwrap();
    assert!(
        !secret.metadata.labels.unwrap_or_default().contains_key(capssh::api::MOVE_LABEL),
        "an unmarked Secret is not touched (not even labelled for clusterctl move)"
    );

    // Marked: the host is probed with it (Secrets are not watched — the manager may not list
    // them — so the next look comes with the retry, or at once with any edit of the SSHHost).
    let mark = json!({"metadata": {"labels": {CREDENTIALS_LABEL: "true"}}});
    secrets.patch("team-key", &PatchParams::default(), &Patch::Merge(mark)).await.unwrap();
    nudge(&api, "h0", "marked").await;
    eventually(60, "h0 Available with the marked Secret", || async { (phase_of(&api, "h0").await == Some(HostPhase::Available)).then_some(()) })
        .await
        .unwrap();
    eventually(30, "the marked Secret labelled for clusterctl move", || async {
        secrets.get("team-key").await.ok()?.metadata.labels?.contains_key(capssh::api::MOVE_LABEL).then_some(())
    })
    .await
    .unwrap();
    bed.assert_never_forbidden("capssh");
}

/// Two SSHHosts for one box: the first probe records its SSHHost on the box; the second is
/// refused as DuplicateHost, naming the first and how to fix it. A recreated SSHHost of the same
/// namespace and name (what `clusterctl move` makes: new uid) is the same host; once the first
/// is deleted (free, it removes its record from the box), the second is accepted.
#[tokio::test]
async fn a_second_sshhost_for_one_box_is_refused() {
    let bed = setup("duplicate-host", 1).await;
    let (farm, client) = (&bed.farm, &bed.client);
    let _manager = bed.manager("capssh", &["--probe-interval-seconds", "2"]);
    let api: Api<SSHHost> = Api::namespaced(client.clone(), NS);
    let address = farm.hosts[0].address.to_string();
    let pin = json!({"publicKeys": [farm.hosts[0].host_key_public]});
    let record = || farm.exec_ok(0, "cat /var/lib/capssh/owner").unwrap();

    api.create(&PostParams::default(), &host_object("first", &address, pin.clone())).await.unwrap();
    eventually(60, "first Available", || async { (phase_of(&api, "first").await == Some(HostPhase::Available)).then_some(()) }).await.unwrap();
    let uid = api.get("first").await.unwrap().metadata.uid.unwrap();
    assert_eq!(record(), format!("namespace={NS}\nname=first\nuid={uid}\n"));

    api.create(&PostParams::default(), &host_object("second", &address, pin.clone())).await.unwrap();
    let refused = ready_reason(&api, "second", "DuplicateHost").await;
    assert!(refused.message.contains(&format!("SSHHost {NS}/first (uid {uid}")), "names the other SSHHost: {}", refused.message);
    assert!(refused.message.contains("Delete one of the two SSHHosts"), "{}", refused.message);
    assert!(refused.message.contains("remove /var/lib/capssh/owner on the host"), "{}", refused.message);
    assert_eq!(phase_of(&api, "second").await, Some(HostPhase::Unreachable), "never Available, so never claimed");
    warning_event(client, "second", "DuplicateHost").await;
    assert_eq!(record(), format!("namespace={NS}\nname=first\nuid={uid}\n"), "the refused SSHHost did not take the record");
    assert_eq!(phase_of(&api, "first").await, Some(HostPhase::Available), "the first keeps the box");

    // The first, moved (clusterctl marks the source copy, deletes it and strips its finalizers,
    // then creates it again under its name): the same host, new uid; the record stays.
    let mark = json!({"metadata": {"annotations": {"clusterctl.cluster.x-k8s.io/delete-for-move": ""}}});
    api.patch("first", &PatchParams::default(), &Patch::Merge(mark)).await.unwrap();
    api.delete("first", &DeleteParams::default()).await.unwrap();
    api.patch("first", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": []}}))).await.unwrap();
    eventually(30, "first gone", || async { api.get_opt("first").await.ok()?.is_none().then_some(()) }).await.unwrap();
    assert_eq!(record(), format!("namespace={NS}\nname=first\nuid={uid}\n"), "a moved source copy keeps the record");
    api.create(&PostParams::default(), &host_object("first", &address, pin.clone())).await.unwrap();
    let new_uid = eventually(60, "the new first Available", || async {
        let host = api.get("first").await.ok()?;
        (host.status.as_ref()?.phase == Some(HostPhase::Available)).then_some(host.metadata.uid?)
    })
    .await
    .unwrap();
    assert_ne!(new_uid, uid);
    assert_eq!(record(), format!("namespace={NS}\nname=first\nuid={new_uid}\n"), "the record follows the move");

    // The fix the message gives: delete one SSHHost. Free, it takes its record off the box.
    api.delete("first", &DeleteParams::default()).await.unwrap();
    eventually(30, "first gone", || async { api.get_opt("first").await.ok()?.is_none().then_some(()) }).await.unwrap();
    assert_eq!(farm.exec_ok(0, "cat /var/lib/capssh/owner 2>/dev/null || echo none").unwrap(), "none\n", "the deleted SSHHost's record is gone");
    nudge(&api, "second", "fixed").await;
    eventually(60, "second Available", || async { (phase_of(&api, "second").await == Some(HostPhase::Available)).then_some(()) }).await.unwrap();
    let second_uid = api.get("second").await.unwrap().metadata.uid.unwrap();
    assert_eq!(record(), format!("namespace={NS}\nname=second\nuid={second_uid}\n"));
    bed.assert_never_forbidden("capssh");
}

/// A claimed host keeps its identity and is not let go while claimed: the API server refuses
/// edits of address, port, user, bastion and hostKey (credentials may still rotate); its
/// deletion waits, saying for what, until the machine releases it. An unclaimed host goes at
/// once; a source copy handed over by `clusterctl move` is left to clusterctl.
#[tokio::test]
async fn a_claimed_host_keeps_its_identity_and_is_kept_until_released() {
    let bed = setup("claimed-host", 1).await;
    let (farm, client) = (&bed.farm, &bed.client);
    let _manager = bed.manager("capssh", &["--probe-interval-seconds", "2"]);
    let api: Api<SSHHost> = Api::namespaced(client.clone(), NS);
    let address = farm.hosts[0].address.to_string();
    let pin = json!({"publicKeys": [farm.hosts[0].host_key_public]});
    let has_finalizer = |host: &SSHHost| host.metadata.finalizers.as_ref().is_some_and(|f| f.iter().any(|f| f == FINALIZER));
    api.create(&PostParams::default(), &host_object("h0", &address, pin.clone())).await.unwrap();
    eventually(60, "h0 Available, with the finalizer", || async {
        let host = api.get("h0").await.ok()?;
        (host.status.as_ref()?.phase == Some(HostPhase::Available) && has_finalizer(&host)).then_some(())
    })
    .await
    .unwrap();

    // Free, the host may be edited; claimed, not what says which box it is.
    api.patch("h0", &PatchParams::default(), &Patch::Merge(json!({"spec": {"port": 22, "user": "root"}}))).await.unwrap();
    let claim = |name: Option<&str>| json!({"spec": {"consumerRef": name.map(|n| json!({"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "SSHMachine", "name": n}))}});
    api.patch("h0", &PatchParams::default(), &Patch::Merge(claim(Some("m1")))).await.unwrap();
    let bastion = json!({"address": "198.18.0.1", "auth": {"privateKeySecretRef": {"name": "farm-key"}}, "hostKey": pin});
    for (what, edit) in [
        ("address", json!({"address": "198.18.255.1"})),
        ("port", json!({"port": 2222})),
        ("user", json!({"user": "capssh-sudo"})),
        ("hostKey", json!({"hostKey": {"publicKeys": [farm.hosts[0].host_key_fingerprint]}})),
        ("hostKey", json!({"hostKey": {"trustOnFirstUse": true}})),
        ("bastion", json!({"bastion": bastion})),
    ] {
        let err = api.patch("h0", &PatchParams::default(), &Patch::Merge(json!({"spec": edit}))).await.expect_err(what).to_string();
        assert!(err.contains("cannot change while the host is claimed") && err.contains("release the host first"), "{what}: {err}");
    }
    // What does not say which box it is stays editable: credentials rotate, maintenance toggles.
    let rotate = json!({"spec": {"auth": {"privateKeySecretRef": {"name": "farm-key", "key": "ssh-privatekey"}}, "maintenance": true}});
    api.patch("h0", &PatchParams::default(), &Patch::Merge(rotate)).await.expect("credentials and maintenance may change while claimed");

    // Deleted while claimed: kept, and Ready says why and what releases it.
    api.delete("h0", &DeleteParams::default()).await.unwrap();
    let waiting = ready_reason(&api, "h0", "WaitingForRelease").await;
    assert!(waiting.message.contains("claimed by SSHMachine m1") && waiting.message.contains("delete its Machine"), "{}", waiting.message);
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let host = api.get("h0").await.expect("a claimed host is not let go");
    assert!(host.metadata.deletion_timestamp.is_some() && has_finalizer(&host));
    // The machine releases it (as the SSHMachine controller does after the reset): it goes.
    api.patch("h0", &PatchParams::default(), &Patch::Merge(claim(None))).await.unwrap();
    eventually(30, "h0 gone once released", || async { api.get_opt("h0").await.ok()?.is_none().then_some(()) }).await.unwrap();

    // Unclaimed: the finalizer goes at once.
    api.create(&PostParams::default(), &host_object("free", &address, pin.clone())).await.unwrap();
    eventually(60, "free with the finalizer", || async { has_finalizer(&api.get("free").await.ok()?).then_some(()) }).await.unwrap();
    api.delete("free", &DeleteParams::default()).await.unwrap();
    eventually(30, "free gone at once", || async { api.get_opt("free").await.ok()?.is_none().then_some(()) }).await.unwrap();

    // clusterctl move's source copy, claimed: marked (its JSON patch replaces the annotations),
    // deleted, finalizers stripped. capssh leaves it alone and it goes.
    api.create(&PostParams::default(), &host_object("moving", &address, pin.clone())).await.unwrap();
    eventually(60, "moving with the finalizer", || async { has_finalizer(&api.get("moving").await.ok()?).then_some(()) }).await.unwrap();
    api.patch("moving", &PatchParams::default(), &Patch::Merge(claim(Some("m2")))).await.unwrap();
    let mark = json!([{"op": "add", "path": "/metadata/annotations", "value": {"clusterctl.cluster.x-k8s.io/delete-for-move": ""}}]);
    api.patch("moving", &PatchParams::default(), &Patch::<()>::Json(serde_json::from_value(mark).unwrap())).await.unwrap();
    api.delete("moving", &DeleteParams::default()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let source = api.get("moving").await.unwrap();
    assert_ne!(ready(&source).map(|c| c.reason).as_deref(), Some("WaitingForRelease"), "a source copy being moved is left alone");
    api.patch("moving", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": []}}))).await.unwrap();
    eventually(30, "the source copy gone", || async { api.get_opt("moving").await.ok()?.is_none().then_some(()) }).await.unwrap();
    bed.assert_never_forbidden("capssh");
}
