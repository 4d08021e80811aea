//! Issue 5, host preparation, through the SSHMachine controller on real systemd Debian nodes
//! (e2e/src/nodes: no container runtime, no Kubernetes) with an artifact mirror served on the
//! nodes' gateway. The test plays Cluster API (Cluster, Machine with spec.version, bootstrap
//! Secret) and pins each SSHMachine to a node:
//!
//! - node-0, mode Artifacts: everything is installed, containerd runs a container, kubelet and
//!   kubeadm report the version, then the bootstrap runs. A second machine on the same host
//!   changes nothing (mtimes, containerd's start time; only SHA256SUMS is fetched). A third
//!   machine at the next version installs it over the old one.
//! - node-1, a tampered mirror (one byte appended to bin/kubelet): refused, the condition names
//!   the file, and nothing is installed.
//! - node-2, mode None with kubelet and kubeadm v1.36.3 and a Machine at v1.36.4: refused with both
//!   versions named; once the right binaries are there, it passes and the bootstrap runs.
//! - node-3, mode Packages from a repository laid out as pkgs.k8s.io (e2e/src/pkgrepo.rs) over
//!   plain http, its key given in packages.signingKey (the host never asks for Release.key),
//!   while another package manager run holds dpkg's lock: preparation waits it out, then installs
//!   containerd from the distribution's package and Kubernetes pinned to the version and held.
//!
//! - node-1 again, a registry mirror (TLS, basic auth) for registry.k8s.io: unlabelled pull
//!   credentials, an untrusted certificate and a wrong password are each refused with a reason
//!   that names the mirror, before anything is installed; then it is prepared, containerd's
//!   hosts.toml holds the credentials (0600), and containerd pulls an image only the mirror has
//!   by its registry.k8s.io name.
//!
//! Every mirror here is plain http, so every Artifacts machine pins SHA256SUMS (checksumsSHA256):
//! without the pin capssh refuses an http mirror.

use capssh::api::v1alpha1::{ConditionStatus, SSHMachine};
use capssh_e2e::apply::apply_one;
use capssh_e2e::capi::{install_capssh_crds, install_crds};
use capssh_e2e::images;
use capssh_e2e::manager::{eventually, start_manager};
use capssh_e2e::mgmt::ManagementPlane;
use capssh_e2e::mirror::{MirrorFolder, MirrorServer, build_mirror};
use capssh_e2e::nodes::NodeFarm;
use capssh_e2e::pkgrepo::build_package_repository;
use capssh_e2e::registry::Registry;
use capssh_e2e::scenario;
use capssh_e2e::tools::{artifacts_dir, repo_root};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

const NS: &str = "preparation";
const VERSION: &str = "v1.36.3";
const NEXT: &str = "v1.36.4";

/// The bootstrap: proves kubeadm is usable by the time it runs, and writes the sentinel.
const BOOTSTRAP: &str = r#"#cloud-config
runcmd:
  - kubeadm version -o short > /var/lib/capssh/kubeadm-seen-by-bootstrap
  - mkdir -p /run/cluster-api && echo success > /run/cluster-api/bootstrap-success.complete
"#;

/// What preparation writes, with sizes and mtimes, plus containerd's start time and images.
const SNAPSHOT: &str = "find /usr/local/bin /opt/cni/bin /etc/containerd /etc/systemd/system /etc/sysctl.d /var/lib/capssh/prepared \
     -type f -printf '%p %s %T@\\n' 2>/dev/null | sort; systemctl show containerd -p ActiveEnterTimestamp -p MainPID; \
     ctr -n k8s.io images ls -q 2>/dev/null | sort";

/// Another package manager run holding dpkg's locks, as unattended upgrades do on a first boot:
/// `dpkg --set-selections` takes them before it reads its input, which ends once the test
/// creates /run/capssh-e2e-release (or after 300 s); it then changes nothing.
const HOLD_DPKG_LOCK: &str = "systemd-run --quiet --collect --unit=capssh-e2e-dpkg-lock sh -c \
     'i=0; while [ ! -e /run/capssh-e2e-release ] && [ $i -lt 300 ]; do sleep 1; i=$((i + 1)); done | dpkg --set-selections'";

/// How long the test keeps dpkg's lock after preparation started waiting for it.
const HELD_WHILE_WAITING: Duration = Duration::from_secs(15);

/// Everything preparation could leave behind; on a refused host none of it may exist.
const ANY_INSTALLED: &str = "ls -d /usr/local/bin/* /opt/cni /etc/containerd /etc/systemd/system/containerd.service \
     /etc/systemd/system/kubelet.service /etc/sysctl.d/99-capssh-kubernetes.conf /var/lib/capssh/prepared \
     /var/lib/capssh/prepare.* /var/lib/containerd/* 2>/dev/null; systemctl is-active containerd 2>/dev/null; true";

#[tokio::test]
async fn preparation_installs_verifies_refuses_and_changes_nothing_the_second_time() {
    // The mirrors first: a failure here needs no nodes.
    let work = artifacts_dir("host_preparation");
    let mirror = build_mirror(&work.join("mirror"), VERSION).unwrap();
    // Same root: removed when `mirror` is dropped.
    let next_sums = build_mirror(&work.join("mirror"), NEXT).map(|next| std::mem::ManuallyDrop::new(next).sums_sha256.clone()).unwrap();
    let tampered = tampered_copy(&mirror, &work.join("mirror-tampered")).unwrap();
    let sums = std::fs::read_to_string(mirror.folder().join("SHA256SUMS")).unwrap();
    let listed: Vec<&str> = sums.lines().filter_map(|l| l.split_once("  ").map(|(_, name)| name)).collect();
    for needed in ["bin/kubeadm", "bin/kubelet", "bin/kubectl", "bin/containerd", "bin/containerd-shim-runc-v2", "bin/ctr", "bin/runc", "cni/bridge"]
    {
        assert!(listed.contains(&needed), "SHA256SUMS lists no {needed}:\n{sums}");
    }
    assert_eq!(listed.iter().filter(|n| n.starts_with("images/")).count(), 5, "{sums}");

    let repository = build_package_repository(&work.join("packages"), VERSION).unwrap();

    let farm = NodeFarm::start("host_preparation", 4).unwrap();
    let server = MirrorServer::start(&mirror.root, SocketAddr::from((farm.gateway, 0))).unwrap();
    let bad_server = MirrorServer::start(&tampered.root, SocketAddr::from((farm.gateway, 0))).unwrap();
    let package_server = MirrorServer::start(&repository.root, SocketAddr::from((farm.gateway, 0))).unwrap();
    let plane = ManagementPlane::start("host-preparation").await.unwrap();
    let client = plane.client().await.unwrap();
    install_crds(&client).await.unwrap();
    install_capssh_crds(&client).await.unwrap();
    scenario::namespace(&client, NS).await.unwrap();
    scenario::register_nodes(&client, NS, &farm, json!({})).await.unwrap();
    cel_refuses_incomplete_preparations(&client).await;
    let _manager = start_manager(&plane, "capssh", &["--probe-interval-seconds", "2"]).unwrap();
    scenario::provisioned_cluster(&client, NS, "c1").await.unwrap();
    let machines: Api<SSHMachine> = Api::namespaced(client.clone(), NS);
    let context = |what: &str| format!("{what}; the nodes' journals: {}, the manager log: {}", farm.logs.display(), plane.dir.display());
    let artifacts = |url: &str, pin: Option<&str>| match pin {
        Some(pin) => json!({"mode": "Artifacts", "artifacts": {"url": url, "checksumsSHA256": pin}}),
        None => json!({"mode": "Artifacts", "artifacts": {"url": url}}),
    };

    // (a) Artifacts on a bare node: installed, running, at the version; then the bootstrap ran.
    machine(&client, "m-art", "node-0", VERSION, artifacts(&server.url(), Some(&mirror.sums_sha256))).await.unwrap();
    let m = provisioned(&machines, "m-art").await.unwrap_or_else(|e| {
        farm.collect_logs();
        panic!("{}", context(&e.to_string()))
    });
    let prepared = condition(&m, "HostPrepared").unwrap();
    assert_eq!((prepared.status, prepared.reason.as_str()), (ConditionStatus::True, "Prepared"), "{}", prepared.message);
    assert_eq!(farm.exec_ok(0, "kubelet --version").unwrap().trim(), format!("Kubernetes {VERSION}"));
    assert_eq!(farm.exec_ok(0, "kubeadm version -o short").unwrap().trim(), VERSION);
    assert_eq!(farm.exec_ok(0, "cat /var/lib/capssh/kubeadm-seen-by-bootstrap").unwrap().trim(), VERSION);
    assert_eq!(farm.exec_ok(0, "systemctl is-active containerd; systemctl is-enabled kubelet").unwrap(), "active\nenabled\n");
    let images = farm.exec_ok(0, "ctr -n k8s.io images ls -q").unwrap();
    for image in ["kube-apiserver:v1.36.3", "kube-controller-manager:v1.36.3", "kube-scheduler:v1.36.3", "etcd:", "pause:"] {
        assert!(images.contains(image), "{image} was not imported:\n{images}");
    }
    let ran = farm.exec_ok(0, "ctr -n k8s.io run --rm registry.k8s.io/kube-apiserver:v1.36.3 capssh-proof kube-apiserver --version").unwrap();
    assert_eq!(ran.trim(), format!("Kubernetes {VERSION}"), "containerd runs a container from a preloaded image");
    let config = farm.exec_ok(0, "cat /etc/containerd/config.toml").unwrap();
    assert!(config.contains("SystemdCgroup = true") && config.contains("sandbox_image = \"registry.k8s.io/pause:"), "{config}");

    // (d) A second machine on the same (released) host: the fast path; nothing is written.
    let before = farm.exec_ok(0, SNAPSHOT).unwrap();
    delete_and_wait(&machines, "m-art").await;
    let asked_before = server.requests().len();
    machine(&client, "m-again", "node-0", VERSION, artifacts(&server.url(), Some(&mirror.sums_sha256))).await.unwrap();
    let m = provisioned(&machines, "m-again").await.unwrap_or_else(|e| panic!("{}", context(&e.to_string())));
    assert_eq!(condition(&m, "HostPrepared").map(|c| c.reason.as_str()), Some("Prepared"));
    assert_eq!(farm.exec_ok(0, SNAPSHOT).unwrap(), before, "the second preparation changed files, images or containerd");
    assert_eq!(server.requests()[asked_before..], [format!("/{VERSION}/amd64/SHA256SUMS")], "the fast path fetches only SHA256SUMS");
    let log = farm.exec_ok(0, "cat /var/lib/capssh/jobs/prepare-*/log").unwrap();
    assert!(log.contains("already prepared") && log.contains("nothing changed"), "{log}");

    // A reused host at the next version: the new Kubernetes binaries, containerd left running.
    let containerd_started = farm.exec_ok(0, "systemctl show containerd -p ActiveEnterTimestamp").unwrap();
    delete_and_wait(&machines, "m-again").await;
    machine(&client, "m-next", "node-0", NEXT, artifacts(&server.url(), Some(&next_sums))).await.unwrap();
    provisioned(&machines, "m-next").await.unwrap_or_else(|e| panic!("{}", context(&e.to_string())));
    assert_eq!(farm.exec_ok(0, "kubelet --version; kubeadm version -o short").unwrap(), format!("Kubernetes {NEXT}\n{NEXT}\n"));
    assert_eq!(farm.exec_ok(0, "cat /var/lib/capssh/kubeadm-seen-by-bootstrap").unwrap().trim(), NEXT);
    assert_eq!(farm.exec_ok(0, "systemctl show containerd -p ActiveEnterTimestamp").unwrap(), containerd_started);
    assert!(farm.exec_ok(0, "ctr -n k8s.io images ls -q").unwrap().contains("kube-apiserver:v1.36.4"));

    // (b) A tampered artifact: refused by name before anything is installed; no bootstrap. (Its
    // SHA256SUMS is the original, so it matches the pin; bin/kubelet does not match SHA256SUMS.)
    machine(&client, "m-bad", "node-1", VERSION, artifacts(&bad_server.url(), Some(&mirror.sums_sha256))).await.unwrap();
    let m = failed_preparation(&machines, "m-bad").await.unwrap_or_else(|e| panic!("{}", context(&e.to_string())));
    let refused = condition(&m, "HostPrepared").unwrap();
    assert_eq!(refused.reason, "ChecksumMismatch", "{}", refused.message);
    assert!(
        refused.message.contains("v1.36.3/amd64/bin/kubelet has SHA-256") && refused.message.contains("nothing was installed"),
        "{}",
        refused.message
    );
    assert_eq!(farm.exec_ok(1, ANY_INSTALLED).unwrap().trim(), "inactive", "a refused host has nothing installed");
    assert!(condition(&m, "BootstrapSucceeded").is_none(), "the bootstrap never started");
    assert!(farm.exec(1, "test -e /run/cluster-api").unwrap().status.code() == Some(1));

    // (e) A registry mirror, as an air-gapped site runs one (TLS, htpasswd), on node-1 (nothing
    // installed there: (b) was refused). Each refusal comes before anything is installed.
    delete_and_wait(&machines, "m-bad").await;
    let registry = Registry::start_on(&work.join("registry"), farm.gateway).unwrap();
    let mirror_only = images::build("registry.k8s.io/capssh-e2e/pause:mirror-only", &images::pause_binary().unwrap(), "/pause").unwrap();
    images::push(&mirror_only, &format!("{}/capssh-e2e/pause:mirror-only", registry.address), &registry.crane_env()).unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let pull_secret = |name: &str, password: &str, labelled: bool| {
        let labels = if labelled { json!({"infrastructure.cluster.x-k8s.io/capssh-credentials": "true"}) } else { json!({}) };
        serde_json::from_value::<Secret>(json!({
            "metadata": {"name": name, "labels": labels},
            "type": "kubernetes.io/basic-auth",
            "stringData": {"username": registry.user, "password": password}
        }))
        .unwrap()
    };
    for (name, password, labelled) in
        [("pull-unlabelled", registry.password(), false), ("pull-wrong", "not-the-password", true), ("pull", registry.password(), true)]
    {
        secrets.create(&PostParams::default(), &pull_secret(name, password, labelled)).await.unwrap();
    }
    let ca = std::fs::read_to_string(&registry.ca_file).unwrap();
    apply_one(
        &client,
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "registry-ca"}, "data": {"ca.crt": ca}}),
        Some(NS),
        false,
    )
    .await
    .unwrap();
    let endpoint = format!("https://{}", registry.address);
    let with_registry = |ca: bool, secret: &str| {
        let mut preparation = artifacts(&server.url(), Some(&mirror.sums_sha256));
        let mut settings = json!({"mirrors": [{"registry": "registry.k8s.io", "endpoint": endpoint}], "credentialsSecretRef": {"name": secret}});
        if ca {
            settings["caRef"] = json!({"kind": "ConfigMap", "name": "registry-ca"});
        }
        preparation["registry"] = settings;
        preparation
    };
    let refusals = [
        ("m-reg-unlabelled", true, "pull-unlabelled", "RegistrySettingsUnavailable", "is not marked for capssh"),
        ("m-reg-untrusted", false, "pull", "RegistryUntrusted", "set registry.caRef"),
        ("m-reg-wrong", true, "pull-wrong", "RegistryAuthFailed", "refused the pull credentials from Secret preparation/pull-wrong: HTTP 401"),
    ];
    for (name, ca, secret, reason, says) in refusals {
        machine(&client, name, "node-1", VERSION, with_registry(ca, secret)).await.unwrap();
        let m = failed_preparation(&machines, name).await.unwrap_or_else(|e| panic!("{}", context(&e.to_string())));
        let refused = condition(&m, "HostPrepared").unwrap();
        assert_eq!(refused.reason, reason, "{name}: {}", refused.message);
        assert!(refused.message.contains(says), "{name}: {}", refused.message);
        if reason != "RegistrySettingsUnavailable" {
            assert!(refused.message.contains(&endpoint) && refused.message.contains("registry.k8s.io"), "names the mirror: {}", refused.message);
        }
        assert!(!refused.message.contains(registry.password()), "{}", refused.message);
        assert_eq!(farm.exec_ok(1, ANY_INSTALLED).unwrap().trim(), "inactive", "{name}: nothing installed");
        delete_and_wait(&machines, name).await;
    }
    machine(&client, "m-reg", "node-1", VERSION, with_registry(true, "pull")).await.unwrap();
    let m = provisioned(&machines, "m-reg").await.unwrap_or_else(|e| panic!("{}", context(&e.to_string())));
    assert_eq!(condition(&m, "HostPrepared").map(|c| c.reason.as_str()), Some("Prepared"));
    let hosts_toml = "/etc/containerd/certs.d/registry.k8s.io/hosts.toml";
    assert_eq!(farm.exec_ok(1, &format!("stat -c %a {hosts_toml}")).unwrap().trim(), "600", "it holds the credentials");
    assert!(farm.exec_ok(1, "cat /etc/containerd/config.toml").unwrap().contains("config_path = \"/etc/containerd/certs.d\""));
    let log = farm.exec_ok(1, "cat /var/lib/capssh/jobs/prepare-*/log").unwrap();
    assert!(log.contains("answers") && !log.contains(registry.password()), "{log}");
    // containerd pulls an image that only the mirror holds, by its upstream name.
    let pulled = farm.exec(1, "ctr -n k8s.io images pull --hosts-dir /etc/containerd/certs.d registry.k8s.io/capssh-e2e/pause:mirror-only").unwrap();
    assert!(pulled.status.success(), "pull through the mirror: {}", String::from_utf8_lossy(&pulled.stderr));
    assert!(farm.exec_ok(1, "ctr -n k8s.io images ls -q").unwrap().contains("registry.k8s.io/capssh-e2e/pause:mirror-only"));

    // (c) None on a node with v1.36.3 for a Machine at v1.36.4: both versions named.
    install_kubernetes_binaries(&farm, 2, VERSION).unwrap();
    machine(&client, "m-none", "node-2", NEXT, json!({"mode": "None"})).await.unwrap();
    let m = failed_preparation(&machines, "m-none").await.unwrap_or_else(|e| panic!("{}", context(&e.to_string())));
    let mismatch = condition(&m, "HostPrepared").unwrap();
    assert_eq!(mismatch.reason, "VersionMismatch");
    assert!(
        mismatch.message.contains("kubelet on host node-2 is v1.36.3 (at /usr/local/bin/kubelet)")
            && mismatch.message.contains("spec.version is v1.36.4"),
        "{}",
        mismatch.message
    );
    assert!(condition(&m, "BootstrapSucceeded").is_none(), "the bootstrap never started");
    // Fixed on the host: the next check (once a minute) passes, and the bootstrap runs.
    install_kubernetes_binaries(&farm, 2, NEXT).unwrap();
    let m = eventually(150, "m-none to be provisioned after the host was fixed", || async {
        let m = machines.get("m-none").await.ok()?;
        (m.status.as_ref()?.initialization.as_ref()?.provisioned == Some(true)).then_some(m)
    })
    .await
    .unwrap_or_else(|e| panic!("{}", context(&e.to_string())));
    assert_eq!(condition(&m, "HostPrepared").map(|c| c.reason.as_str()), Some("Verified"));
    assert!(farm.exec(2, "test -e /etc/containerd").unwrap().status.code() == Some(1), "mode None installs nothing");

    // Packages over plain http with the repository's key in the spec, while another package
    // manager run holds dpkg's lock: preparation waits for it, then installs the distribution's
    // containerd and Kubernetes from the repository, pinned and held.
    farm.exec_ok(3, HOLD_DPKG_LOCK).unwrap();
    eventually(30, "dpkg to hold its lock on node-3", || async { farm.exec_ok(3, "pgrep -x dpkg && grep ' POSIX ' /proc/locks").ok() })
        .await
        .unwrap();
    let key = &repository.signing_key;
    let packages = json!({"mode": "Packages", "packages": {"repositoryURL": package_server.url(), "signingKey": key}});
    machine(&client, "m-pkg", "node-3", VERSION, packages).await.unwrap();
    let job_log = "cat /var/lib/capssh/jobs/prepare-*/log 2>/dev/null || true";
    let waiting = eventually(240, "node-3's preparation to wait for dpkg's lock", || async {
        let log = farm.exec_ok(3, job_log).ok()?;
        log.lines().find(|l| l.starts_with("[capssh] waiting for the package manager: ")).map(str::to_string)
    })
    .await
    .unwrap_or_else(|e| {
        farm.collect_logs();
        panic!("{}", context(&e.to_string()))
    });
    assert!(waiting.contains(": /var/lib/dpkg/lock-frontend is held by process ") && waiting.ends_with(" (dpkg)"), "{waiting}");
    tokio::time::sleep(HELD_WHILE_WAITING).await;
    let m = machines.get("m-pkg").await.unwrap();
    let preparing = condition(&m, "HostPrepared").unwrap();
    assert_eq!(preparing.reason, "Preparing", "still waiting, not failed: {}", preparing.message);
    assert!(!farm.exec_ok(3, job_log).unwrap().contains("free after"), "dpkg's lock is still held");
    farm.exec_ok(3, "touch /run/capssh-e2e-release").unwrap();
    let m = provisioned(&machines, "m-pkg").await.unwrap_or_else(|e| {
        farm.collect_logs();
        panic!("{}", context(&e.to_string()))
    });
    assert_eq!(condition(&m, "HostPrepared").map(|c| c.reason.as_str()), Some("Prepared"));
    let log = farm.exec_ok(3, job_log).unwrap();
    let waited = log
        .lines()
        .find_map(|l| l.strip_prefix("[capssh] the package manager is free after ")?.strip_suffix(" s")?.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no wait recorded:\n{log}"));
    assert!(waited >= HELD_WHILE_WAITING.as_secs(), "waited {waited} s:\n{log}");
    eprintln!("node-3: {waiting}; the package manager was free after {waited} s");
    assert_eq!(farm.exec(3, "systemctl is-active capssh-e2e-dpkg-lock").unwrap().status.code(), Some(3), "the other run ended by itself");
    let asked = package_server.requests();
    assert!(!asked.iter().any(|path| path.ends_with("Release.key")), "the key came from the spec, not the repository: {asked:?}");
    assert_eq!(&farm.exec_ok(3, "cat /etc/apt/keyrings/capssh-kubernetes.asc").unwrap(), key);
    assert!(farm.exec_ok(3, "cat /var/lib/capssh/prepared").unwrap().contains("\nsigning_key=sha256:"));
    let installed = farm.exec_ok(3, "dpkg-query -W -f '${Package} ${Version}\\n' kubelet kubeadm kubectl containerd").unwrap();
    let expected = &repository.package_version;
    for package in ["kubelet", "kubeadm", "kubectl"] {
        assert!(installed.lines().any(|l| l == format!("{package} {expected}")), "{package} {expected} is not installed:\n{installed}");
    }
    assert!(installed.lines().any(|l| l.starts_with("containerd 1.6")), "Debian's containerd is not installed:\n{installed}");
    assert_eq!(farm.exec_ok(3, "apt-mark showhold").unwrap(), "kubeadm\nkubectl\nkubelet\n");
    assert_eq!(farm.exec_ok(3, "command -v kubelet; kubelet --version").unwrap(), format!("/usr/bin/kubelet\nKubernetes {VERSION}\n"));
    assert_eq!(farm.exec_ok(3, "systemctl is-active containerd; systemctl is-enabled kubelet").unwrap(), "active\nenabled\n");
    assert!(farm.exec_ok(3, "cat /etc/containerd/config.toml").unwrap().contains("SystemdCgroup = true"));
    assert_eq!(farm.exec_ok(3, "cat /var/lib/capssh/kubeadm-seen-by-bootstrap").unwrap().trim(), VERSION);
}

/// The Kubernetes API refuses a preparation that cannot work, with a message that says why.
async fn cel_refuses_incomplete_preparations(client: &kube::Client) {
    for (preparation, expected) in [
        (json!({"mode": "Artifacts"}), "mode Artifacts needs artifacts.url"),
        (json!({"mode": "None", "artifacts": {"url": "http://m.example"}}), "artifacts is only used with mode Artifacts"),
        (json!({"mode": "Artifacts", "artifacts": {"url": "ftp://m.example/x"}}), "must be an http:// or https:// URL"),
        (json!({"mode": "Artifacts", "artifacts": {"url": "http://m.example", "checksumsSHA256": "abc"}}), "checksumsSHA256"),
        (json!({"mode": "Sometimes"}), "Unsupported value"),
        // Plain http: the network is not trusted without a pin or a key.
        (json!({"mode": "Artifacts", "artifacts": {"url": "http://m.example"}}), "artifacts.url is plain http://: set artifacts.checksumsSHA256"),
        (
            json!({"mode": "Packages", "packages": {"repositoryURL": "http://r.example"}}),
            "packages.repositoryURL is plain http://: set packages.signingKey",
        ),
        (
            json!({"mode": "Packages", "packages": {"signingKey": "-----BEGIN PGP PUBLIC KEY BLOCK----- but nothing that ends it, long enough"}}),
            "must be an ASCII-armored OpenPGP public key block",
        ),
        (
            json!({"mode": "Packages", "packages": {"signingKey": "-----BEGIN PGP PUBLIC KEY BLOCK-----\n-----BEGIN PGP PRIVATE KEY BLOCK-----\n-----END PGP PUBLIC KEY BLOCK-----"}}),
            "packages.signingKey holds a private key",
        ),
    ] {
        let doc = json!({
            "apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "SSHMachine",
            "metadata": {"name": "invalid"}, "spec": {"preparation": preparation}
        });
        let err = apply_one(client, &doc, Some(NS), false).await.expect_err("refused");
        assert!(err.to_string().contains(expected), "{preparation}: {err}");
    }
}

/// A Machine at `version` with its bootstrap Secret, and its SSHMachine pinned to `host` with
/// `preparation`, as Cluster API would create them (the Machine owns the SSHMachine).
async fn machine(client: &kube::Client, name: &str, host: &str, version: &str, preparation: Value) -> anyhow::Result<()> {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": format!("{name}-bootstrap"), "labels": {"cluster.x-k8s.io/cluster-name": "c1"}},
        "type": "cluster.x-k8s.io/secret", "data": {"value": b64(BOOTSTRAP), "format": b64("cloud-config")}
    }))?;
    Api::<Secret>::namespaced(client.clone(), NS).create(&PostParams::default(), &secret).await?;
    let owner = apply_one(
        client,
        &json!({
            "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
            "metadata": {"name": name, "labels": {"cluster.x-k8s.io/cluster-name": "c1"}},
            "spec": {"clusterName": "c1", "version": version, "bootstrap": {"dataSecretName": format!("{name}-bootstrap")},
                     "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "SSHMachine", "name": name}}
        }),
        Some(NS),
        false,
    )
    .await?;
    apply_one(
        client,
        &json!({
            "apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "SSHMachine",
            "metadata": {"name": name, "labels": {"cluster.x-k8s.io/cluster-name": "c1"},
                         "ownerReferences": [{"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine", "name": name, "uid": owner.metadata.uid}]},
            "spec": {"hostRef": {"name": host}, "preparation": preparation}
        }),
        Some(NS),
        false,
    )
    .await?;
    Ok(())
}

fn condition<'a>(machine: &'a SSHMachine, kind: &str) -> Option<&'a capssh::api::v1alpha1::Condition> {
    machine.status.as_ref()?.conditions.iter().find(|c| c.r#type == kind)
}

async fn provisioned(machines: &Api<SSHMachine>, name: &str) -> anyhow::Result<SSHMachine> {
    eventually(300, &format!("{name} to be provisioned"), || async {
        let m = machines.get(name).await.ok()?;
        (m.status.as_ref()?.initialization.as_ref()?.provisioned == Some(true)).then_some(m)
    })
    .await
}

/// Waits until HostPrepared is False with a reason other than Preparing.
async fn failed_preparation(machines: &Api<SSHMachine>, name: &str) -> anyhow::Result<SSHMachine> {
    eventually(300, &format!("{name}'s preparation to fail"), || async {
        let m = machines.get(name).await.ok()?;
        let c = condition(&m, "HostPrepared")?;
        (c.status == ConditionStatus::False && c.reason != "Preparing").then_some(m.clone())
    })
    .await
}

async fn delete_and_wait(machines: &Api<SSHMachine>, name: &str) {
    machines.delete(name, &DeleteParams::default()).await.unwrap();
    eventually(180, &format!("{name} to be deleted and its host released"), || async { machines.get_opt(name).await.ok()?.is_none().then_some(()) })
        .await
        .unwrap();
}

/// A mirror whose bin/kubelet has one byte more than SHA256SUMS says (hard links for the rest).
fn tampered_copy(mirror: &MirrorFolder, root: &Path) -> anyhow::Result<MirrorFolder> {
    let _ = std::fs::remove_dir_all(root);
    std::fs::create_dir_all(root)?;
    let status = std::process::Command::new("cp").arg("-al").arg(mirror.root.join(VERSION)).arg(root).status()?;
    anyhow::ensure!(status.success(), "cp -al failed");
    let kubelet = root.join(VERSION).join("amd64/bin/kubelet");
    let mut bytes = std::fs::read(&kubelet)?;
    bytes.push(b'x');
    std::fs::remove_file(&kubelet)?; // a new inode: the original mirror keeps its kubelet
    std::fs::write(&kubelet, bytes)?;
    Ok(MirrorFolder { root: root.to_path_buf(), version: VERSION.into(), arch: "amd64".into(), sums_sha256: mirror.sums_sha256.clone() })
}

/// Puts hack/tools' kubelet and kubeadm of `version` into the node's /usr/local/bin (a pre-baked host).
fn install_kubernetes_binaries(farm: &NodeFarm, i: usize, version: &str) -> anyhow::Result<()> {
    let root = format!("/proc/{}/root", farm.nodes[i].init_pid()?);
    for tool in ["kubelet", "kubeadm"] {
        let source = repo_root().join(format!("hack/tools/bin/{tool}-{version}"));
        let partial = format!("{root}/usr/local/bin/.{tool}.new");
        std::fs::copy(&source, &partial)?;
        std::fs::rename(&partial, format!("{root}/usr/local/bin/{tool}"))?;
    }
    Ok(())
}
