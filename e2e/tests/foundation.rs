//! The foundation, against real things: clusterctl renders our provider and templates, and a
//! real kube-apiserver accepts them, enforces our CEL rules, and calls our template webhook.

use capssh_e2e::apply::{apply_all, apply_one, documents};
use capssh_e2e::clusterctl::LocalRepository;
use capssh_e2e::mgmt::ManagementPlane;
use capssh_e2e::process::Daemon;
use capssh_e2e::tools::{capssh, free_port};
use capssh_e2e::{capi, tools};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// One management plane and one local repository for the whole file; every test uses its own
/// namespace. The daemons die with the test process (see capssh_e2e::process).
struct Shared {
    plane: ManagementPlane,
    repo: LocalRepository,
    /// `capssh manager` serving the template webhook, registered for the whole file: a webhook
    /// configuration outliving its server would make every later template write fail.
    _manager: Daemon,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        std::thread::spawn(|| {
            let runtime = tokio::runtime::Runtime::new().expect("runtime");
            runtime.block_on(async {
                let plane = ManagementPlane::start("foundation").await.expect("management plane");
                let client = plane.client().await.expect("client");
                capi::install_crds(&client).await.expect("Cluster API CRDs");
                capi::install_cert_manager_kinds(&client).await.expect("cert-manager kinds");
                capi::install_capssh_crds(&client).await.expect("our CRDs are accepted");
                let repo = LocalRepository::publish(&plane.dir).expect("local clusterctl repository");
                let manager = start_webhook(&plane, &repo, &client).await;
                Shared { plane, repo, _manager: manager }
            })
        })
        .join()
        .expect("starting the shared management plane")
    })
}

async fn namespace(client: &kube::Client, name: &str) {
    capssh_e2e::scenario::namespace(client, name).await.unwrap_or_else(|err| panic!("creating namespace {name}: {err}"));
}

/// The variables the README documents for `clusterctl generate cluster`.
const TEMPLATE_ENV: &[(&str, &str)] = &[("SSH_CONTROL_PLANE_ENDPOINT_HOST", "198.18.0.100")];

fn generate_cluster(repo: &LocalRepository, flavor: Option<&str>, env: &[(&str, &str)]) -> Result<String, String> {
    let mut args = vec![
        "generate",
        "cluster",
        "demo",
        "--infrastructure",
        "ssh:<version>",
        "--target-namespace",
        "demo",
        "--kubernetes-version",
        "v1.36.3",
        "--control-plane-machine-count",
        "3",
        "--worker-machine-count",
        "2",
    ];
    if let Some(flavor) = flavor {
        args.extend(["--flavor", flavor]);
    }
    let version = repo.version.clone();
    let provider = format!("ssh:{version}");
    args[4] = &provider;
    repo.run(&args, env)
}

#[test]
fn components_hold_one_namespace_and_a_manager_container() {
    let repo = &shared().repo;
    let rendered = repo
        .run(&["generate", "provider", "--infrastructure", &format!("ssh:{}", repo.version)], &[])
        .expect("clusterctl generate provider renders our components");
    let docs = documents(&rendered).unwrap();
    let namespaces: Vec<_> = docs.iter().filter(|d| d["kind"] == "Namespace").collect();
    assert_eq!(namespaces.len(), 1, "clusterctl requires exactly one Namespace");
    assert_eq!(namespaces[0]["metadata"]["name"], "capssh-system");
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").expect("a Deployment");
    let containers = deployment["spec"]["template"]["spec"]["containers"].as_array().unwrap();
    assert!(containers.iter().any(|c| c["name"] == "manager"), "clusterctl requires a container named manager");
    for doc in &docs {
        assert_eq!(
            doc["metadata"]["labels"]["cluster.x-k8s.io/provider"], "infrastructure-ssh",
            "every component carries the provider label: {}",
            doc["metadata"]["name"]
        );
    }
    let security = &containers[0]["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
}

#[tokio::test]
async fn components_pass_a_server_side_dry_run() {
    let shared = shared();
    let client = shared.plane.client().await.unwrap();
    let docs = documents(&std::fs::read_to_string(shared.repo.components()).unwrap()).unwrap();
    // The Namespace must exist for namespaced dry runs; everything else is only validated.
    namespace(&client, "capssh-system").await;
    for doc in docs.iter().filter(|d| d["kind"] != "Namespace") {
        apply_one(&client, doc, None, true).await.unwrap_or_else(|err| panic!("{err}"));
    }
}

#[tokio::test]
async fn every_template_flavor_renders_and_is_accepted() {
    let shared = shared();
    let client = shared.plane.client().await.unwrap();
    namespace(&client, "demo").await;
    for flavor in [None, Some("external-lb")] {
        let rendered = generate_cluster(&shared.repo, flavor, TEMPLATE_ENV).unwrap_or_else(|err| panic!("flavor {flavor:?} does not render: {err}"));
        let docs = documents(&rendered).unwrap();
        let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
        for kind in ["Cluster", "SSHCluster", "KubeadmControlPlane", "SSHMachineTemplate", "MachineDeployment", "KubeadmConfigTemplate"] {
            assert!(kinds.contains(&kind), "flavor {flavor:?} lacks a {kind}: {kinds:?}");
        }
        assert!(rendered.contains("198.18.0.100"), "the endpoint variable is used");
        assert!(rendered.contains("{{ ds.meta_data.provider_id }}"), "the kubelet gets our providerID");
        assert_eq!(rendered.contains("kube-vip"), flavor.is_none(), "kube-vip only in the default flavor");
        apply_all(&client, &docs, Some("demo"), true).await.unwrap_or_else(|err| panic!("flavor {flavor:?} is refused by the API server: {err}"));
    }
}

#[tokio::test]
async fn the_clusterclass_and_its_topology_cluster_are_accepted() {
    let shared = shared();
    let client = shared.plane.client().await.unwrap();
    namespace(&client, "demo-topology").await;
    let class = shared
        .repo
        .run(&["generate", "yaml", "--from", shared.repo.file("clusterclass-ssh.yaml").to_str().unwrap()], &[])
        .expect("the ClusterClass renders");
    apply_all(&client, &documents(&class).unwrap(), Some("demo-topology"), false).await.expect("the ClusterClass and its templates are accepted");
    let cluster = generate_cluster(&shared.repo, Some("topology"), TEMPLATE_ENV).expect("the topology flavor renders");
    let docs: Vec<Value> = documents(&cluster).unwrap().into_iter().filter(|d| d["kind"] == "Cluster").collect();
    assert_eq!(docs[0]["spec"]["topology"]["classRef"]["name"], "ssh");
    let mut docs = docs;
    docs[0]["metadata"]["namespace"] = json!("demo-topology");
    apply_all(&client, &docs, None, true).await.expect("the topology Cluster is accepted");
}

#[test]
fn a_missing_required_variable_fails_clearly() {
    let err = generate_cluster(&shared().repo, None, &[]).expect_err("generation must fail without the endpoint");
    assert!(err.contains("SSH_CONTROL_PLANE_ENDPOINT_HOST"), "the error names the variable: {err}");
}

fn sshhost(name: &str, auth: Value) -> Value {
    json!({
        "apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1",
        "kind": "SSHHost",
        "metadata": {"name": name},
        "spec": {"address": "198.18.1.2", "auth": auth, "hostKey": {"publicKeys": ["SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"]}}
    })
}

async fn expect_refusal(client: &kube::Client, doc: Value, namespace: &str, needle: &str) {
    let err = apply_one(client, &doc, Some(namespace), false).await.expect_err("the API server must refuse this");
    let message = err.to_string();
    assert!(message.contains(needle), "expected {needle:?} in: {message}");
}

#[tokio::test]
async fn cel_rules_refuse_invalid_objects_with_readable_messages() {
    let client = shared().plane.client().await.unwrap();
    namespace(&client, "cel").await;
    let both = json!({"privateKeySecretRef": {"name": "k"}, "passwordSecretRef": {"name": "p", "key": "password"}});
    expect_refusal(&client, sshhost("two-auth", both), "cel", "set exactly one of auth.privateKeySecretRef and auth.passwordSecretRef").await;
    expect_refusal(&client, sshhost("no-auth", json!({})), "cel", "set exactly one of").await;

    let mut bad_address = sshhost("bad-address", json!({"privateKeySecretRef": {"name": "k"}}));
    bad_address["spec"]["address"] = json!("not an address!");
    expect_refusal(&client, bad_address, "cel", "address must be an IP address or a DNS name").await;

    let mut unpinned = sshhost("unpinned", json!({"privateKeySecretRef": {"name": "k"}}));
    unpinned["spec"]["hostKey"] = json!({});
    expect_refusal(&client, unpinned, "cel", "pin the host key").await;

    let mut bad_key = sshhost("bad-key", json!({"privateKeySecretRef": {"name": "k"}}));
    bad_key["spec"]["hostKey"] = json!({"publicKeys": ["not-a-key"]});
    expect_refusal(&client, bad_key, "cel", "each host key must be an OpenSSH public key").await;
    let mut known_hosts_line = sshhost("known-hosts-line", json!({"privateKeySecretRef": {"name": "k"}}));
    known_hosts_line["spec"]["hostKey"] =
        json!({"publicKeys": ["[198.18.1.2]:22 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"]});
    apply_one(&client, &known_hosts_line, Some("cel"), false).await.expect("a known_hosts line is a valid pin");

    let mut bad_port = sshhost("bad-port", json!({"privateKeySecretRef": {"name": "k"}}));
    bad_port["spec"]["port"] = json!(70000);
    expect_refusal(&client, bad_port, "cel", "spec.port").await;

    // A valid host is accepted, with defaults filled in.
    let ok = apply_one(&client, &sshhost("ok", json!({"privateKeySecretRef": {"name": "k"}})), Some("cel"), false)
        .await
        .expect("a valid SSHHost is accepted");
    assert_eq!(ok.data["spec"]["port"], 22);
    assert_eq!(ok.data["spec"]["user"], "root");
    assert_eq!(ok.data["spec"]["auth"]["privateKeySecretRef"]["key"], "ssh-privatekey");

    // providerID and hostRef never change once set.
    let machine = |provider_id: &str| {
        json!({
            "apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "SSHMachine",
            "metadata": {"name": "m"}, "spec": {"providerID": provider_id, "hostRef": {"name": "ok"}}
        })
    };
    apply_one(&client, &machine("ssh://cel/ok"), Some("cel"), false).await.expect("an SSHMachine is accepted");
    expect_refusal(&client, machine("ssh://cel/other"), "cel", "providerID cannot change once set").await;

    // Templates cannot pin a host.
    let template = json!({
        "apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "SSHMachineTemplate",
        "metadata": {"name": "pinned"}, "spec": {"template": {"spec": {"hostRef": {"name": "ok"}}}}
    });
    expect_refusal(&client, template, "cel", "a machine template cannot set providerID or hostRef").await;
}

/// Runs `capssh manager` with a webhook certificate from the plane's CA and registers the
/// webhook configuration from our components, pointed at it (as Cluster API's envtest does).
async fn start_webhook(plane: &ManagementPlane, repo: &LocalRepository, client: &kube::Client) -> Daemon {
    let dir = plane.dir.join("webhook");
    std::fs::create_dir_all(&dir).unwrap();
    plane.ca.server("capssh-webhook", &[]).unwrap().write(&dir, "tls").unwrap();
    let port = free_port();
    let mut cmd = Command::new(capssh());
    cmd.args(["manager", "--webhook-addr", &format!("127.0.0.1:{port}")])
        .args(["--health-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--metrics-addr", &format!("127.0.0.1:{}", free_port())])
        .arg("--webhook-cert-dir")
        .arg(&dir)
        .env("KUBECONFIG", &plane.kubeconfig);
    let daemon = Daemon::start("capssh-manager", cmd, &plane.dir.join("capssh-webhook.log")).unwrap();

    let components = documents(&std::fs::read_to_string(repo.components()).unwrap()).unwrap();
    let mut config =
        components.into_iter().find(|d| d["kind"] == "ValidatingWebhookConfiguration").expect("our components hold the template webhook");
    let ca = base64_encode(&plane.ca.cert_pem());
    for webhook in config["webhooks"].as_array_mut().unwrap() {
        let path = webhook["clientConfig"]["service"]["path"].as_str().unwrap().to_string();
        webhook["clientConfig"] = json!({"url": format!("https://127.0.0.1:{port}{path}"), "caBundle": ca});
    }
    apply_one(client, &config, None, false).await.expect("registering the webhook");
    wait_for_port(port).await;
    daemon
}

fn base64_encode(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

async fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "the webhook server did not listen on {port}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_template_webhook_refuses_edits_but_lets_topology_dry_runs_through() {
    let shared = shared();
    let client = shared.plane.client().await.unwrap();
    namespace(&client, "webhook").await;

    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "webhook",
        &kube::discovery::ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(
            "infrastructure.cluster.x-k8s.io",
            "v1alpha1",
            "SSHMachineTemplate",
        )),
    );
    let template = |role: &str, annotations: Value| {
        json!({
            "apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "SSHMachineTemplate",
            "metadata": {"name": "workers", "annotations": annotations},
            "spec": {"template": {"spec": {"hostSelector": {"matchLabels": {"role": role}}}}}
        })
    };
    // Creating passes through the webhook too, so a created object proves it answers.
    apply_one(&client, &template("worker", json!({})), Some("webhook"), false).await.expect("create passes");

    let params = PatchParams::apply(capssh_e2e::apply::FIELD_MANAGER).force();
    let err = api.patch("workers", &params, &Patch::Apply(template("gpu", json!({})))).await.expect_err("an edit of spec.template.spec is refused");
    let message = err.to_string();
    assert!(message.contains("spec.template.spec is immutable"), "{message}");

    let mut dry_run = params.clone();
    dry_run.dry_run = true;
    let marked = template("gpu", json!({"topology.cluster.x-k8s.io/dry-run": ""}));
    let answer = api.patch("workers", &dry_run, &Patch::Apply(marked)).await.expect("a topology dry run passes");
    assert_eq!(answer.data["spec"]["template"]["spec"]["hostSelector"]["matchLabels"]["role"], "gpu");

    // The dry run stored nothing; a metadata-only edit is fine.
    let stored = api.get("workers").await.unwrap();
    assert_eq!(stored.data["spec"]["template"]["spec"]["hostSelector"]["matchLabels"]["role"], "worker");
    api.patch("workers", &params, &Patch::Apply(template("worker", json!({"note": "ok"})))).await.expect("metadata edits pass");
}

#[test]
fn the_tools_are_the_pinned_versions() {
    let out = Command::new(tools::tool("kube-apiserver")).arg("--version").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "Kubernetes v1.36.3");
    let out = Command::new(tools::tool("clusterctl")).args(["version", "-o", "short"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "v1.14.2");
}
