//! Cluster API's own e2e specs (the Go module e2e/capi, Cluster API v1.14.2's `test/e2e` called
//! unchanged) against a management cluster a suite made, in the framework's existing-cluster
//! mode: the providers already run there (`clusterctl init` from the suite's local repository),
//! so the framework only builds its own clusterctl repository from the same release files and
//! creates each spec's workload cluster on hosts of the suite's node farm.
//!
//! What the Go suite gets from here, in `<work>/capi-e2e/` (also its artifacts folder):
//!
//! - `hosts/hosts.yaml`, created in every spec's namespace: the farm's key as a credentials
//!   Secret, the registry's CA and pull credentials (what the flavors' preparation names; labelled
//!   for `clusterctl move`, as SelfHosted moves the namespace), and one pinned SSHHost per host,
//!   the first `role=control-plane`, the others `role=worker`;
//! - `clusterctl-settings.yaml` (`CAPSSH_E2E_CLUSTERCTL_SETTINGS`): the `images` and
//!   `cert-manager` settings of the management cluster's own clusterctl config
//!   ([`crate::installed::install_settings`]), which the suite merges into the clusterctl config
//!   it generates, for the `clusterctl init` SelfHosted runs on the cluster it made;
//! - `flavors/`: e2e/capi/data's flavors and the ClusterClass, with [`crate::sandbox::adapt`] laid
//!   over them as over the suite's own clusters (artifact mirror, registry mirrors, kubelet flags);
//! - the variables the flavors read (`KUBERNETES_VERSION`, the VIP, the Pod and Service networks)
//!   in its environment, and `KUBECONFIG`, the management cluster's.
//!
//! The output goes to `capi-e2e.log` (and to stderr as it comes); Ginkgo's JSON report
//! (`report.json`) gives the table of specs printed at the end.

use crate::apply::documents;
use crate::clusterctl::LocalRepository;
use crate::nodes::NodeFarm;
use crate::process::Daemon;
use crate::registry::Registry;
use crate::sandbox::{SandboxSettings, adapt};
use crate::tools::{build_tool, repo_root};
use crate::workload::{SSH_HOST, Workload, api, assert_clean, list, wait_for};
use anyhow::Context;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

pub mod upgrade;

/// The environment variable that asks for the specs: a Ginkgo label filter
/// (`quick-start && !ClusterClass`). Unset or empty, nothing runs.
pub const VARIABLE: &str = "CAPSSH_E2E_CAPI_SPECS";
/// How long Ginkgo lets the whole run take (its default, 1h, is short for several specs on real hosts).
const SUITE_TIMEOUT: &str = "3h";
/// The credentials Secret of the hosts, in every spec's namespace.
const KEY_SECRET: &str = "node-key";
/// How many hosts the specs get, and how many of them are control-plane hosts (the others are
/// workers): KCPRemediation's three control planes and a spare (a remediated machine's host is
/// reset before it is free again), MachineDeploymentScale's three workers. The other specs need
/// less at their peak: NodeDrainTimeout 3 + 1, ClusterClassChanges 2 + 2 (overlapping rollouts,
/// maxSurge 1), KCPAndMachineDeploymentRollout 1 + 2 (e2e/capi/README.md has the table).
pub const HOSTS: usize = 7;
const CONTROL_PLANE_HOSTS: usize = 4;
/// The files the e2e config publishes for the ssh provider, by the sets adapted together (a set
/// holds exactly one Cluster; the ClusterClass goes with the flavor that names it).
const FLAVOR_SETS: [&[&str]; 5] = [
    &["cluster-template.yaml"],
    &["cluster-template-md-remediation.yaml"],
    &["cluster-template-kcp-remediation.yaml"],
    &["cluster-template-kcp-md-taints.yaml"],
    &["cluster-template-topology.yaml", CLUSTER_CLASS],
];
const CLUSTER_CLASS: &str = "clusterclass-ssh.yaml";
/// The file, in the Go suite's folder, of the clusterctl settings it merges into its own config.
const CLUSTERCTL_SETTINGS: &str = "clusterctl-settings.yaml";

/// The label filter of [`VARIABLE`], when the specs are asked for.
pub fn label_filter() -> Option<String> {
    std::env::var(VARIABLE).ok().filter(|v| !v.trim().is_empty())
}

/// What `clusterctl init` of a management cluster needs when the specs are to run on it: the
/// ClusterTopology feature gate for the ClusterClass specs and MachineTaintPropagation for
/// KCPAndMachineDeploymentRollout's Machine taints (Cluster API's default is off for both). Empty
/// when they are not asked for.
pub fn init_variables() -> Vec<(&'static str, &'static str)> {
    if label_filter().is_some() { vec![("CLUSTER_TOPOLOGY", "true"), ("EXP_MACHINE_TAINT_PROPAGATION", "true")] } else { Vec::new() }
}

/// The image of the Pods the framework deploys into workload clusters (NodeDrainTimeout's
/// Deployments: `generateDeployment` in sigs.k8s.io/cluster-api/test/framework/deployment_helpers.go).
/// Not the pause that kubeadm's images put on the hosts (3.10.2 for v1.36), so the registry serves
/// it, built from the same pause program, where a mirror of registry.k8s.io keeps it.
const FRAMEWORK_POD_IMAGE: &str = "registry.k8s.io/pause:3.10.1";

/// The management cluster and what the specs' clusters use.
pub struct Target<'a> {
    /// The suite's folder: the specs' files and artifacts go to `capi-e2e/` in it.
    pub work: &'a Path,
    pub management: &'a Workload,
    /// The repository `clusterctl init` installed from (Cluster API's providers laid out as
    /// [`crate::release::publish_capi_released`] writes them, capssh's release beside them).
    pub repository: &'a LocalRepository,
    pub registry: &'a Registry,
    pub settings: &'a SandboxSettings,
    pub nodes: &'a NodeFarm,
    /// The farm's nodes the specs' clusters run on ([`HOSTS`] of them); they must be free.
    pub hosts: Range<usize>,
    /// Other free nodes, for the clusters of a management cluster a spec makes (ClusterctlUpgrade,
    /// [`upgrade::SECOND_HOSTS`] of them); empty when the filter does not select that spec
    /// ([`upgrade::selected`]), and then nothing is prepared for it.
    pub second_hosts: Range<usize>,
    /// The namespace of the management cluster where the suite registered those nodes (their
    /// SSHHosts are deleted first: a box stands for one SSHHost at a time).
    pub registered_in: &'a str,
    pub kubernetes_version: &'a str,
    /// The specs' control-plane VIP, and their Pod and Service networks.
    pub vip: Ipv4Addr,
    pub networks: (&'a str, &'a str),
}

/// Runs the specs `filter` selects against `target`; fails when one fails or none ran. Returns
/// the table of specs.
pub async fn run(filter: &str, target: &Target<'_>) -> anyhow::Result<String> {
    let data = repo_root().join("e2e/capi/data");
    let check = Command::new(data.join("generate.sh")).arg("--check").output().context("running e2e/capi/data/generate.sh --check")?;
    anyhow::ensure!(check.status.success(), "e2e/capi/data is stale: {}", String::from_utf8_lossy(&check.stderr).trim());
    let binary = build_tool("capi-e2e.test")?;
    // Absolute: the Go suite runs in this folder and reads every path it is given literally.
    let dir = std::path::absolute(target.work.join("capi-e2e"))?;
    let (hosts_dir, flavors_dir) = (dir.join("hosts"), dir.join("flavors"));
    std::fs::create_dir_all(&hosts_dir)?;
    std::fs::create_dir_all(&flavors_dir)?;
    write_flavors(&data.join("infrastructure-ssh"), &flavors_dir, target.settings)?;
    let nodes = &target.nodes.nodes[target.hosts.clone()];
    let hosts: Vec<(&str, Ipv4Addr, &str)> = nodes.iter().map(|n| (n.name.as_str(), n.address, n.host_key_public.as_str())).collect();
    let pull = target.registry.pull_objects(&target.settings.registry_ca_config_map, &target.settings.registry_credentials_secret)?;
    std::fs::write(
        hosts_dir.join("hosts.yaml"),
        to_yaml(&host_objects(&hosts, CONTROL_PLANE_HOSTS, &target.nodes.client_key.private_key_pem, pull))?,
    )?;
    let install_settings = crate::installed::install_settings(&target.repository.root)?;
    std::fs::write(dir.join(CLUSTERCTL_SETTINGS), to_yaml(&[install_settings])?)?;
    let pod_image = crate::images::build(FRAMEWORK_POD_IMAGE, &crate::images::pause_binary()?, "pause")?;
    crate::images::push(&pod_image, &crate::images::relocate(FRAMEWORK_POD_IMAGE, &target.registry.address), &target.registry.crane_env())?;

    let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
    free_hosts(&target.management.client().await?, target.registered_in, &names).await?;
    for i in target.hosts.clone() {
        let owner = target.nodes.exec_ok(i, "cat /var/lib/capssh/owner 2>/dev/null || true")?;
        anyhow::ensure!(owner.trim().is_empty(), "{}: its deleted SSHHost left the owner record {owner:?}", target.nodes.nodes[i].name);
    }
    anyhow::ensure!(names.len() == HOSTS, "the specs need {HOSTS} hosts, not {}", names.len());
    eprintln!(
        "Cluster API's e2e specs ({filter}) on {}: {CONTROL_PLANE_HOSTS} control-plane hosts, {} workers",
        names.join(", "),
        HOSTS - CONTROL_PLANE_HOSTS
    );

    // The caller gives second hosts exactly when the filter selects ClusterctlUpgrade
    // (`upgrade::selected`, a dry run it already made to size the farm).
    let upgrade = if !target.second_hosts.is_empty() {
        let second: Vec<(&str, Ipv4Addr, &str)> =
            target.nodes.nodes[target.second_hosts.clone()].iter().map(|n| (n.name.as_str(), n.address, n.host_key_public.as_str())).collect();
        Some(upgrade::prepare(target, &second, &dir)?)
    } else {
        None
    };

    let report = dir.join("report.json");
    let _ = std::fs::remove_file(&report);
    let config = repo_root().join("e2e/capi/config/capssh.yaml");
    let mut command = Command::new(&binary);
    command
        .current_dir(&dir)
        .args(["-ginkgo.label-filter", filter, "-ginkgo.v", "-ginkgo.no-color", "-ginkgo.timeout", SUITE_TIMEOUT])
        .arg("-ginkgo.json-report")
        .arg(&report)
        .arg("-e2e.artifacts-folder")
        .arg(&dir)
        .arg("-e2e.config")
        .arg(&config)
        // $ARTIFACTS would override the artifacts folder.
        .env_remove("ARTIFACTS");
    for (name, value) in suite_env(target, &dir)?.into_iter().chain(upgrade.iter().flat_map(|u| u.env.clone())) {
        command.env(name, value);
    }
    let log = dir.join("capi-e2e.log");
    let status = tokio::task::spawn_blocking(move || run_streaming(command, &log)).await??;

    let outcomes = match std::fs::read_to_string(&report) {
        Ok(text) => outcomes(&text)?,
        Err(err) => anyhow::bail!("capi-e2e.test ({status}) wrote no report {}: {err}; see {}", report.display(), dir.join("capi-e2e.log").display()),
    };
    let table = table(&outcomes);
    std::fs::write(dir.join("specs.txt"), &table)?;
    eprintln!("\n{table}");
    let failed: Vec<&SpecOutcome> = outcomes.iter().filter(|o| o.failed()).collect();
    for outcome in &failed {
        eprintln!("{}: {}", outcome.name, outcome.failure);
    }
    anyhow::ensure!(failed.is_empty(), "{} of Cluster API's e2e specs failed; artifacts in {}", failed.len(), dir.display());
    anyhow::ensure!(!outcomes.is_empty(), "the label filter {filter:?} selected no spec");
    anyhow::ensure!(status.success(), "capi-e2e.test: {status}, though its report shows no failure; see {}", dir.join("capi-e2e.log").display());
    for node in nodes.iter().chain(&target.nodes.nodes[target.second_hosts.clone()]) {
        assert_clean(target.nodes, &node.name)?;
    }
    drop(upgrade);
    Ok(table)
}

/// The Go suite's environment (see e2e/capi/README.md and config/capssh.yaml).
fn suite_env(target: &Target<'_>, dir: &Path) -> anyhow::Result<Vec<(&'static str, String)>> {
    let release = target.repository.components().parent().map(Path::to_path_buf).context("capssh's release folder")?;
    let home = dir.join("home");
    std::fs::create_dir_all(&home)?;
    let path = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()).display().to_string();
    Ok(vec![
        ("KUBECONFIG", path(&target.management.kubeconfig)),
        ("CAPSSH_CAPI_REPO", path(&target.repository.root)),
        ("CAPSSH_RELEASE_DIR", path(&release)),
        ("CAPSSH_VERSION", target.repository.version.clone()),
        ("CAPSSH_E2E_HOSTS_DIR", path(&dir.join("hosts"))),
        ("CAPSSH_E2E_FLAVORS_DIR", path(&dir.join("flavors"))),
        ("CAPSSH_E2E_CLUSTERCLASS_DIR", path(&dir.join("flavors"))),
        ("CAPSSH_E2E_CLUSTERCTL_SETTINGS", path(&dir.join(CLUSTERCTL_SETTINGS))),
        ("CNI", path(&repo_root().join("e2e/capi/data/cni/kube-router.yaml"))),
        ("KUBERNETES_VERSION", target.kubernetes_version.to_string()),
        ("SSH_CONTROL_PLANE_ENDPOINT_HOST", target.vip.to_string()),
        ("SSH_KUBE_VIP_INTERFACE", "eth0".into()),
        ("SSH_CONTROL_PLANE_HOST_ROLE", "control-plane".into()),
        ("SSH_WORKER_HOST_ROLE", "worker".into()),
        ("SSH_POD_CIDR", target.networks.0.to_string()),
        ("SSH_SERVICE_CIDR", target.networks.1.to_string()),
        // clusterctl's own state (overrides, version checks) stays in the artifacts.
        ("HOME", path(&home)),
        ("XDG_CONFIG_HOME", path(&home)),
        ("CLUSTERCTL_DISABLE_VERSIONCHECK", "true".into()),
    ])
}

/// Runs `command` to its end, its output in `log` and copied to stderr as it comes; the child
/// dies with this process.
fn run_streaming(command: Command, log: &Path) -> anyhow::Result<ExitStatus> {
    let _ = std::fs::remove_file(log);
    let mut child = Daemon::start("capi-e2e.test", command, log)?;
    let mut reader = std::fs::File::open(log)?;
    let mut chunk = Vec::new();
    loop {
        let status = child.exit_status();
        chunk.clear();
        reader.read_to_end(&mut chunk)?;
        std::io::stderr().write_all(&chunk)?;
        if let Some(status) = status {
            return Ok(status);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Deletes the SSHHosts `names` in `namespace` (each free one lets go of its box's owner record)
/// and waits until they are gone.
async fn free_hosts(client: &kube::Client, namespace: &str, names: &[String]) -> anyhow::Result<()> {
    let registered = list(client, namespace, SSH_HOST).await?;
    let claimed: Vec<_> = registered
        .iter()
        .filter(|h| h.metadata.name.as_ref().is_some_and(|n| names.contains(n)) && h.data.pointer("/spec/consumerRef").is_some())
        .filter_map(|h| h.metadata.name.clone())
        .collect();
    anyhow::ensure!(claimed.is_empty(), "hosts still claimed in {namespace}: {claimed:?}");
    let hosts = api(client, namespace, SSH_HOST);
    for name in names {
        match hosts.delete(name, &Default::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(err) => return Err(err.into()),
        }
    }
    wait_for(5, &format!("the SSHHosts {names:?} gone from {namespace}"), || async {
        let left: Vec<String> =
            list(client, namespace, SSH_HOST).await?.into_iter().filter_map(|h| h.metadata.name).filter(|n| names.contains(n)).collect();
        Ok(if left.is_empty() { Ok(()) } else { Err(format!("left: {left:?}")) })
    })
    .await
}

/// The objects of the hosts directory, namespace `${NAMESPACE}` (the Go suite puts the spec's
/// there): the credentials Secret, `extra` (the registry's CA and pull Secret), and one pinned
/// SSHHost per (name, address, host key), the first `control_planes` for control planes.
/// `extra` gets clusterctl's move label: nothing owns those objects, and SelfHosted moves the
/// namespace (capssh labels the credentials Secret itself once a host logs in with it).
pub fn host_objects(hosts: &[(&str, Ipv4Addr, &str)], control_planes: usize, private_key_pem: &str, extra: Vec<Value>) -> Vec<Value> {
    let credentials = json!({(capssh::api::v1alpha1::CREDENTIALS_LABEL): "true"});
    let mut objects = vec![json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": KEY_SECRET, "labels": credentials},
        "type": "kubernetes.io/ssh-auth",
        "stringData": {"ssh-privatekey": private_key_pem}
    })];
    for mut object in extra {
        object["metadata"]["labels"][capssh::api::MOVE_LABEL] = json!("");
        objects.push(object);
    }
    for (i, (name, address, host_key)) in hosts.iter().enumerate() {
        let role = if i < control_planes { "control-plane" } else { "worker" };
        objects.push(json!({
            "apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "SSHHost",
            "metadata": {"name": name, "labels": {"role": role}},
            "spec": {"address": address.to_string(), "auth": {"privateKeySecretRef": {"name": KEY_SECRET}},
                     "hostKey": {"publicKeys": [host_key]}}
        }));
    }
    for object in &mut objects {
        object["metadata"]["namespace"] = json!("${NAMESPACE}");
    }
    objects
}

fn to_yaml(documents: &[Value]) -> anyhow::Result<String> {
    let mut out = String::new();
    for document in documents {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(document)?);
    }
    Ok(out)
}

/// Writes every file of [`FLAVOR_SETS`] into `to`, adapted: the flavors from `flavors`, the
/// ClusterClass from templates/.
fn write_flavors(flavors: &Path, to: &Path, settings: &SandboxSettings) -> anyhow::Result<()> {
    for set in FLAVOR_SETS {
        let sources: Vec<PathBuf> =
            set.iter().map(|name| if *name == CLUSTER_CLASS { repo_root().join("templates").join(name) } else { flavors.join(name) }).collect();
        let texts = sources.iter().map(|s| std::fs::read_to_string(s).with_context(|| s.display().to_string())).collect::<Result<Vec<_>, _>>()?;
        let adapted = adapt_templates(&texts, settings).with_context(|| format!("adapting {set:?}"))?;
        for ((name, source), text) in set.iter().zip(&sources).zip(adapted) {
            let header = format!("# {name}: {} adapted to the e2e sandbox by e2e/src/capi_specs.rs, for one run.\n", source.display());
            std::fs::write(to.join(name), header + &text)?;
        }
    }
    Ok(())
}

/// `templates` (clusterctl templates, one Cluster among them) with [`adapt`] laid over them, still
/// templates: every `${…}` reference stays as it was written, to be filled by clusterctl. The
/// references are swapped for plain placeholders while the documents are parsed, adapted and
/// written again, then put back; whatever a template holds, the result is checked: filled with the
/// same values, each adapted template gives what [`adapt`] makes of the original.
pub fn adapt_templates(templates: &[String], settings: &SandboxSettings) -> anyhow::Result<Vec<String>> {
    adapt_templates_with(templates, &|documents| adapt(documents, settings))
}

/// [`adapt_templates`] with another adaptation than [`adapt`].
pub fn adapt_templates_with(templates: &[String], adapt: &dyn Fn(&mut [Value]) -> anyhow::Result<()>) -> anyhow::Result<Vec<String>> {
    let protected = templates.iter().map(|t| Protected::new(t)).collect::<anyhow::Result<Vec<_>>>()?;
    let mut all = Vec::new();
    let mut counts = Vec::new();
    for template in &protected {
        let docs = documents(&template.text)?;
        counts.push(docs.len());
        all.extend(docs);
    }
    adapt(&mut all)?;
    let mut docs = all.into_iter();
    let mut adapted = Vec::new();
    for (template, count) in protected.iter().zip(counts) {
        adapted.push(template.restore(&to_yaml(&docs.by_ref().take(count).collect::<Vec<_>>())?)?);
    }

    let mut expected = Vec::new();
    for template in templates {
        expected.extend(documents(&substitute(template, sample_value)?)?);
    }
    adapt(&mut expected)?;
    let mut got = Vec::new();
    for template in &adapted {
        got.extend(documents(&substitute(template, sample_value)?)?);
    }
    if let Some((want, have)) = expected.iter().zip(&got).find(|(want, have)| want != have) {
        anyhow::bail!("an adapted template changed more than adapt does:\nwant {want}\nhave {have}");
    }
    anyhow::ensure!(expected.len() == got.len(), "the adapted templates hold {} documents, not {}", got.len(), expected.len());
    Ok(adapted)
}

const PLACEHOLDER: &str = "CAPSSHE2EVAR";

/// A template whose `${…}` references are placeholders (a whole quoted scalar `"${…}"` is one,
/// quotes included), and the originals.
struct Protected {
    text: String,
    originals: Vec<String>,
}

impl Protected {
    fn new(template: &str) -> anyhow::Result<Self> {
        anyhow::ensure!(!template.contains(PLACEHOLDER), "a template that holds {PLACEHOLDER} itself");
        let (mut text, mut originals, mut rest) = (String::new(), Vec::new(), template);
        while let Some(start) = rest.find("${") {
            let end = start + rest[start..].find('}').context("a ${ without its }")? + 1;
            let quoted = rest[..start].ends_with('"') && rest[end..].starts_with('"');
            let (from, to) = if quoted { (start - 1, end + 1) } else { (start, end) };
            text.push_str(&rest[..from]);
            text.push_str(&placeholder(originals.len()));
            originals.push(rest[from..to].to_string());
            rest = &rest[to..];
        }
        text.push_str(rest);
        Ok(Protected { text, originals })
    }

    fn restore(&self, yaml: &str) -> anyhow::Result<String> {
        let mut out = yaml.to_string();
        for (i, original) in self.originals.iter().enumerate() {
            out = out.replace(&placeholder(i), original);
        }
        anyhow::ensure!(!out.contains(PLACEHOLDER), "a placeholder the serializer changed");
        Ok(out)
    }
}

fn placeholder(i: usize) -> String {
    format!("{PLACEHOLDER}{i:05}Z")
}

/// `text` with every `${NAME}` and `${NAME:=default}` (also `:-`, `=`, `-`) replaced by
/// `value(NAME, default)`, as clusterctl fills a template.
pub fn substitute(text: &str, value: impl Fn(&str, Option<&str>) -> String) -> anyhow::Result<String> {
    let (mut out, mut rest) = (String::new(), text);
    while let Some(start) = rest.find("${") {
        let end = start + rest[start..].find('}').context("a ${ without its }")?;
        let inner = &rest[start + 2..end];
        let split = inner.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(inner.len());
        let (name, operator) = inner.split_at(split);
        let default = [":=", ":-", "=", "-"].iter().find_map(|op| operator.strip_prefix(op));
        out.push_str(&rest[..start]);
        out.push_str(&value(name, default));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The values of [`adapt_templates`]' check: a variable's default, else "1" (a number, so that a
/// quoted scalar written back unquoted would show).
fn sample_value(_: &str, default: Option<&str>) -> String {
    default.unwrap_or("1").to_string()
}

/// One node of a Ginkgo run: a spec, or a suite-level node that did not pass.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecOutcome {
    pub name: String,
    /// Ginkgo's state: passed, failed, panicked, timedout, interrupted, aborted…
    pub state: String,
    pub seconds: f64,
    /// The failure's message (empty when it passed).
    pub failure: String,
}

impl SpecOutcome {
    pub fn failed(&self) -> bool {
        !matches!(self.state.as_str(), "passed" | "skipped" | "pending")
    }
}

/// The specs that ran, from a Ginkgo JSON report (`-ginkgo.json-report`): every spec not
/// skipped or pending, and every suite-level node (BeforeSuite…) that did not pass.
pub fn outcomes(report: &str) -> anyhow::Result<Vec<SpecOutcome>> {
    let suites: Vec<Value> = serde_json::from_str(report).context("a Ginkgo JSON report")?;
    let mut out = Vec::new();
    for spec in suites.iter().flat_map(|s| s["SpecReports"].as_array().into_iter().flatten()) {
        let (kind, state) = (spec["LeafNodeType"].as_str().unwrap_or_default(), spec["State"].as_str().unwrap_or_default());
        let outcome = SpecOutcome {
            name: String::new(),
            state: state.to_string(),
            seconds: spec["RunTime"].as_f64().unwrap_or_default() / 1e9,
            failure: spec["Failure"]["Message"].as_str().unwrap_or_default().lines().next().unwrap_or_default().to_string(),
        };
        let name = if kind == "It" {
            if matches!(state, "skipped" | "pending") {
                continue;
            }
            let texts = spec["ContainerHierarchyTexts"].as_array().into_iter().flatten().filter_map(Value::as_str);
            texts.chain(spec["LeafNodeText"].as_str()).filter(|t| !t.is_empty()).collect::<Vec<_>>().join(" ")
        } else if outcome.failed() {
            format!("[{kind}] {}", spec["LeafNodeText"].as_str().unwrap_or_default()).trim_end().to_string()
        } else {
            continue;
        };
        out.push(SpecOutcome { name, ..outcome });
    }
    Ok(out)
}

/// `spec | result | seconds`, one line per outcome.
pub fn table(outcomes: &[SpecOutcome]) -> String {
    let width = outcomes.iter().map(|o| o.name.chars().count()).chain([4]).max().unwrap_or(4);
    let state = outcomes.iter().map(|o| o.state.len()).chain([6]).max().unwrap_or(6);
    let mut out = format!("{:<width$} | {:<state$} | seconds\n", "spec", "result");
    for o in outcomes {
        out.push_str(&format!("{:<width$} | {:<state$} | {:>7.0}\n", o.name, o.state, o.seconds));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::tests::settings;

    /// Every flavor e2e/capi publishes, adapted: still a template (its variables and the CNI
    /// line the framework fills are there as written), with the sandbox's preparation and kubelet
    /// flags on every SSHMachineTemplate and kubeadm configuration, the ClusterClass's too.
    #[test]
    fn the_published_flavors_are_adapted_and_stay_templates() {
        let dir = tempdir();
        write_flavors(&repo_root().join("e2e/capi/data/infrastructure-ssh"), &dir, &settings()).unwrap();
        for name in FLAVOR_SETS.iter().flat_map(|s| s.iter()) {
            let text = std::fs::read_to_string(dir.join(name)).unwrap();
            if *name != CLUSTER_CLASS {
                assert!(text.lines().any(|l| l == "data: ${CNI_RESOURCES}"), "{name}: the CNI line the framework replaces");
                assert!(text.contains("${KUBERNETES_VERSION}") && text.contains("${CLUSTER_NAME}"), "{name}");
            }
            let docs = documents(&substitute(&text, sample_value).unwrap()).unwrap();
            let templates: Vec<_> = docs.iter().filter(|d| d["kind"] == "SSHMachineTemplate").collect();
            assert!(!templates.is_empty() || *name == "cluster-template-topology.yaml", "{name}");
            for template in templates {
                let preparation = &template["spec"]["template"]["spec"]["preparation"];
                assert_eq!(preparation["mode"], "Artifacts", "{name}");
                assert_eq!(preparation["registry"]["caRef"]["name"], "registry-ca", "{name}");
            }
            for doc in docs.iter().filter(|d| d["kind"] == "KubeadmControlPlaneTemplate" || d["kind"] == "KubeadmControlPlane") {
                let spec = doc.pointer("/spec/template/spec/kubeadmConfigSpec").or(doc.pointer("/spec/kubeadmConfigSpec")).unwrap();
                let args = spec["initConfiguration"]["nodeRegistration"]["kubeletExtraArgs"].as_array().unwrap();
                assert!(args.iter().any(|a| a["name"] == "fail-cgroupv1"), "{name}: {args:?}");
                assert!(args.iter().any(|a| a["name"] == "provider-id"), "{name}: {args:?}");
            }
        }
        let kcp = std::fs::read_to_string(dir.join("cluster-template-kcp-remediation.yaml")).unwrap();
        let filled = substitute(&kcp, |name, default| default.map_or_else(|| name.to_lowercase(), str::to_string)).unwrap();
        let control_plane = documents(&filled).unwrap().into_iter().find(|d| d["kind"] == "KubeadmControlPlane").unwrap();
        let hold = &control_plane["spec"]["kubeadmConfigSpec"]["preKubeadmCommands"][0];
        assert_eq!(hold, r#"sh /run/capssh-e2e/hold-bootstrap.sh "token" "server" "namespace""#, "the hold command, filled by the spec");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn quoted_and_bare_references_come_back_as_written() {
        let template = "kind: Cluster\nmetadata:\n  name: \"${CLUSTER_NAME}\"\nspec:\n  replicas: ${COUNT}\n  port: \"${PORT:=6443}\"\n  \
                        role: \"${CLUSTER_NAME}-md-0\"\n  file: |\n    value: \"${HOST}\"\n---\nkind: SSHMachineTemplate\n---\nkind: KubeadmConfigTemplate\n";
        let adapted = adapt_templates(&[template.to_string()], &settings()).unwrap().remove(0);
        for line in ["  name: \"${CLUSTER_NAME}\"", "  replicas: ${COUNT}", "  port: \"${PORT:=6443}\"", "    value: \"${HOST}\""] {
            assert!(adapted.lines().any(|l| l == line), "{line:?} in:\n{adapted}");
        }
        assert!(adapted.contains("${CLUSTER_NAME}-md-0"), "{adapted}");
    }

    #[test]
    fn substitution_takes_values_and_defaults() {
        let filled = substitute("a: ${A}\nb: ${B:=x}\nc: ${C:-}\nd: \"${D=\"\"}\"", |name, default| match name {
            "A" => "1".into(),
            _ => default.unwrap_or("?").into(),
        })
        .unwrap();
        assert_eq!(filled, "a: 1\nb: x\nc: \nd: \"\"\"\"");
    }

    #[test]
    fn the_hosts_directory_registers_pinned_hosts_by_role_in_the_spec_namespace() {
        let keys: Vec<String> = (0..CONTROL_PLANE_HOSTS + 1).map(|i| format!("ssh-ed25519 AAAA{i}")).collect();
        let names: Vec<String> = (0..keys.len()).map(|i| format!("node-{i}")).collect();
        let hosts: Vec<(&str, Ipv4Addr, &str)> =
            names.iter().zip(&keys).enumerate().map(|(i, (n, k))| (n.as_str(), Ipv4Addr::new(198, 18, 0, 136 + i as u8), k.as_str())).collect();
        let extra = vec![json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "registry-ca"}, "data": {"ca.crt": "x"}})];
        let yaml = to_yaml(&host_objects(&hosts, CONTROL_PLANE_HOSTS, "-----BEGIN KEY-----\nabc\n-----END KEY-----\n", extra)).unwrap();
        let docs = documents(&yaml.replace("${NAMESPACE}", "spec-ns")).unwrap();
        assert!(docs.iter().all(|d| d["metadata"]["namespace"] == "spec-ns"), "{yaml}");
        assert_eq!(docs[0]["metadata"]["labels"][capssh::api::v1alpha1::CREDENTIALS_LABEL], "true");
        assert_eq!(docs[0]["stringData"]["ssh-privatekey"], "-----BEGIN KEY-----\nabc\n-----END KEY-----\n");
        assert_eq!(docs[1]["kind"], "ConfigMap");
        assert_eq!(docs[1]["metadata"]["labels"][capssh::api::MOVE_LABEL], "", "the extra objects move with the namespace");
        let roles: Vec<_> = docs[2..].iter().map(|d| (d["metadata"]["name"].clone(), d["metadata"]["labels"]["role"].clone())).collect();
        let mut want: Vec<_> = (0..CONTROL_PLANE_HOSTS).map(|i| (json!(format!("node-{i}")), json!("control-plane"))).collect();
        want.push((json!(format!("node-{CONTROL_PLANE_HOSTS}")), json!("worker")));
        assert_eq!(roles, want);
        assert_eq!(docs[3]["spec"]["hostKey"]["publicKeys"], json!(["ssh-ed25519 AAAA1"]));
        assert_eq!(docs[3]["spec"]["address"], "198.18.0.137");
        assert_eq!(docs[3]["spec"]["auth"]["privateKeySecretRef"]["name"], KEY_SECRET);
    }

    #[test]
    fn a_ginkgo_report_gives_the_specs_that_ran_and_the_suite_nodes_that_failed() {
        let report = r#"[{"SuitePath": "/x", "SpecReports": [
          {"ContainerHierarchyTexts": null, "LeafNodeType": "SynchronizedBeforeSuite", "LeafNodeText": "", "State": "passed", "RunTime": 42000000000},
          {"ContainerHierarchyTexts": ["capssh quick-start, default flavor (kube-vip VIP)", "When following the Cluster API quick-start"],
           "LeafNodeType": "It", "LeafNodeText": "Should create a workload cluster", "State": "passed", "RunTime": 612400000000},
          {"ContainerHierarchyTexts": ["capssh md-remediation"], "LeafNodeType": "It", "LeafNodeText": "Should replace unhealthy machines",
           "State": "failed", "RunTime": 1800000000000, "Failure": {"Message": "Timed out after 1800s.\nmore"}},
          {"ContainerHierarchyTexts": ["capssh md-scale"], "LeafNodeType": "It", "LeafNodeText": "Should scale", "State": "skipped", "RunTime": 0},
          {"ContainerHierarchyTexts": null, "LeafNodeType": "SynchronizedAfterSuite", "LeafNodeText": "", "State": "timedout", "RunTime": 5000000000}
        ]}]"#;
        let got = outcomes(report).unwrap();
        let rows: Vec<_> = got.iter().map(|o| (o.name.as_str(), o.state.as_str(), o.seconds.round() as u64, o.failed())).collect();
        assert_eq!(
            rows,
            [
                (
                    "capssh quick-start, default flavor (kube-vip VIP) When following the Cluster API quick-start Should create a workload cluster",
                    "passed",
                    612,
                    false
                ),
                ("capssh md-remediation Should replace unhealthy machines", "failed", 1800, true),
                ("[SynchronizedAfterSuite]", "timedout", 5, true),
            ]
        );
        assert_eq!(got[1].failure, "Timed out after 1800s.");
        let table = table(&got);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("spec ") && lines[0].ends_with("| result   | seconds"), "{table}");
        assert!(lines[2].contains("| failed   |") && lines[2].ends_with("   1800"), "{table}");
        assert!(outcomes("[]").unwrap().is_empty());
    }

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("capssh-capi-specs-{}-{:?}", std::process::id(), std::thread::current().id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
