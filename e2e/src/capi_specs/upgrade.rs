//! What ClusterctlUpgrade (label `clusterctl-upgrade`) needs beyond the other specs. The spec
//! makes a second management cluster (the default flavor, on the specs' hosts), installs the
//! previous capssh release there with a clusterctl binary it downloads, makes a workload cluster
//! from that release's template, upgrades capssh to this checkout's release and scales md-0.
//!
//! - capssh's previous release (hack/previous-release.sh, [`Release::previous`]): its components
//!   and metadata for the Go suite's repository, its image in the registry where clusterctl's
//!   `images` setting sends it (`<registry>/capssh-install/capssh:<version>`);
//! - a second hosts directory: other boxes than the specs' (a box stands for one SSHHost at a
//!   time, and the second management cluster registers its own), one control plane and two
//!   workers (md-0 goes 1 → 2 → 1). The previous release cannot point containerd at a registry
//!   mirror, so these boxes are prepared beforehand as a site would prepare them: `capssh prepare
//!   run` (this checkout's CLI) installs Kubernetes from the artifact mirror with the registry
//!   mirrors, and the previous release only verifies them (mode None);
//! - the flavor `previous`: that release's own `cluster-template.yaml` laid over as
//!   [`adapt_previous`] says, with the CNI the other flavors get;
//! - a clusterctl binary over HTTP on loopback (the spec fetches it with Go's HTTP client).

use super::{Target, to_yaml};
use crate::images::{build_image, capssh_image_of, push};
use crate::installed::{in_repository, stripped};
use crate::mirror::MirrorServer;
use crate::release::Release;
use crate::sandbox::{MIRRORED_REGISTRIES, adapt_with_preparation};
use anyhow::Context;
use serde_json::{Value, json};
use std::net::Ipv4Addr;
use std::path::Path;

/// The spec's Ginkgo label.
pub const LABEL: &str = "clusterctl-upgrade";
/// The second management cluster's workload cluster: one control plane, md-0 at two at most.
pub const SECOND_HOSTS: usize = 3;
/// The flavor of the previous release, published as a file of that version only.
const FLAVOR: &str = "cluster-template-previous.yaml";
/// The variable of the previous flavor's control-plane endpoint: its one control-plane host's
/// address (the VIP of `SSH_CONTROL_PLANE_ENDPOINT_HOST` is the second management cluster's).
const ENDPOINT_VARIABLE: &str = "SSH_PREVIOUS_CONTROL_PLANE_HOST";
/// The CNI of the e2e flavors (the end of e2e/capi/data's default flavor, from this line on).
const CNI_MARKER: &str = "# Added by e2e/capi/data/generate.sh: the CNI";

/// Whether the Ginkgo label filter selects the spec, as Ginkgo decides it (`'!ClusterClass'`
/// does, `'!clusterctl-upgrade'` does not): a dry run of the suite, which runs no node, reports
/// the specs it would run.
pub fn selected(filter: &str) -> anyhow::Result<bool> {
    let binary = crate::tools::build_tool("capi-e2e.test")?;
    let dir = std::env::temp_dir().join(format!("capssh-capi-dry-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let report = dir.join("report.json");
    let out = std::process::Command::new(&binary)
        .args(["-ginkgo.dry-run", "-ginkgo.label-filter", filter, "-ginkgo.json-report"])
        .arg(&report)
        .arg("-e2e.artifacts-folder")
        .arg(&dir)
        .env_remove("ARTIFACTS")
        .output()
        .context("a dry run of capi-e2e.test")?;
    let text = std::fs::read_to_string(&report);
    let _ = std::fs::remove_dir_all(&dir);
    let text = text.with_context(|| format!("capi-e2e.test's dry run ({}) wrote no report: {}", out.status, String::from_utf8_lossy(&out.stderr)))?;
    selects(&text)
}

/// Whether a Ginkgo JSON report (of a dry run) would run a spec labelled [`LABEL`].
fn selects(report: &str) -> anyhow::Result<bool> {
    let suites: Vec<Value> = serde_json::from_str(report).context("a Ginkgo JSON report")?;
    Ok(suites.iter().flat_map(|s| s["SpecReports"].as_array().into_iter().flatten()).any(|spec| {
        let labelled = [&spec["ContainerHierarchyLabels"], &spec["LeafNodeLabels"]]
            .into_iter()
            .flat_map(|labels| labels.as_array().into_iter().flatten())
            .flat_map(|l| l.as_array().map(|inner| inner.iter().collect::<Vec<_>>()).unwrap_or_else(|| vec![l]))
            .any(|l| l == LABEL);
        spec["LeafNodeType"] == "It" && spec["State"] == "passed" && labelled
    }))
}

/// What the harness keeps while the spec runs: the clusterctl download.
pub struct UpgradeInputs {
    pub env: Vec<(&'static str, String)>,
    _clusterctl: MirrorServer,
}

/// Publishes the previous release, its image and flavor, serves clusterctl and writes the second
/// hosts directory (`second`: name, address, host key; the first for the control plane) into `dir`.
pub fn prepare(target: &Target<'_>, second: &[(&str, Ipv4Addr, &str)], dir: &Path) -> anyhow::Result<UpgradeInputs> {
    anyhow::ensure!(second.len() == SECOND_HOSTS, "ClusterctlUpgrade needs {SECOND_HOSTS} second hosts, not {}", second.len());
    let previous = Release::previous()?;
    let settings = crate::installed::install_settings(&target.repository.root)?;
    let repository = settings
        .pointer("/images/all/repository")
        .and_then(Value::as_str)
        .context("the install repository's clusterctl.yaml sends no image anywhere (images: all: repository)")?;
    let binary = stripped(&previous.binary, &dir.join("previous-bin"))?;
    let archive = build_image(&capssh_image_of(&binary, &previous.version)?, Path::new(crate::images::CACHE))?;
    let image = in_repository(&archive.reference, repository);
    let digest = push(&archive, &image, &target.registry.crane_env())?;
    anyhow::ensure!(digest == archive.digest, "{image}: the registry stored {digest}, the archive holds {}", archive.digest);
    eprintln!("ClusterctlUpgrade: capssh {} from {}, its image {image}", previous.version, previous.dir.display());

    prepare_hosts(target, second, &dir.join("second-hosts-preparation"))?;

    let source = previous.dir.join("cluster-template.yaml");
    let template = std::fs::read_to_string(&source).with_context(|| source.display().to_string())?;
    let flavor = adapt_previous_template(&template, &cni_documents()?)?;
    let flavor_path = dir.join("flavors").join(FLAVOR);
    std::fs::write(&flavor_path, format!("# {FLAVOR}: {} adapted to the e2e sandbox by e2e/src/capi_specs/upgrade.rs.\n{flavor}", source.display()))?;

    let downloads = dir.join("downloads");
    std::fs::create_dir_all(&downloads)?;
    let clusterctl = crate::tools::tool("clusterctl");
    std::fs::copy(&clusterctl, downloads.join(format!("clusterctl-{}-{}", std::env::consts::OS, go_arch())))
        .with_context(|| format!("copying {}", clusterctl.display()))?;
    let server = MirrorServer::start(&downloads, (Ipv4Addr::LOCALHOST, 0).into())?;

    let hosts_dir = dir.join("hosts-second");
    std::fs::create_dir_all(&hosts_dir)?;
    let objects = super::host_objects(second, 1, &target.nodes.client_key.private_key_pem, Vec::new());
    std::fs::write(hosts_dir.join("hosts.yaml"), to_yaml(&objects)?)?;
    let control_plane = second[0].1.to_string();
    let path = |p: &Path| p.display().to_string();
    Ok(UpgradeInputs {
        env: vec![
            ("CAPSSH_PREVIOUS_VERSION", previous.version.clone()),
            ("CAPSSH_PREVIOUS_RELEASE_DIR", path(&previous.dir)),
            ("CAPSSH_E2E_PREVIOUS_FLAVOR", path(&flavor_path)),
            ("CAPSSH_E2E_OLD_CLUSTERCTL_URL", format!("{}/clusterctl-{{OS}}-{{ARCH}}", server.url())),
            ("CAPSSH_E2E_SECOND_HOSTS_DIR", path(&hosts_dir)),
            (ENDPOINT_VARIABLE, control_plane),
        ],
        _clusterctl: server,
    })
}

/// Go's name of this machine's architecture (the spec fills `{ARCH}` with it).
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The CNI documents of the e2e flavors (a ConfigMap of `${CNI_RESOURCES}` and its
/// ClusterResourceSet, which selects Clusters labelled `cni: kube-router`).
fn cni_documents() -> anyhow::Result<String> {
    let path = crate::tools::repo_root().join("e2e/capi/data/infrastructure-ssh/cluster-template.yaml");
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    let start = text.find(CNI_MARKER).with_context(|| format!("{} holds no CNI block ({CNI_MARKER:?})", path.display()))?;
    Ok(format!("---\n{}", &text[start..]))
}

/// The previous release's template, still a template, laid over as [`adapt_previous`] says and
/// `cni` (documents) appended.
pub fn adapt_previous_template(template: &str, cni: &str) -> anyhow::Result<String> {
    let template = template.replace("${SSH_CONTROL_PLANE_ENDPOINT_HOST}", &format!("${{{ENDPOINT_VARIABLE}}}"));
    let template = format!("{}\n{cni}", template.trim_end());
    let mut adapted = super::adapt_templates_with(&[template], &adapt_previous)?;
    adapted.pop().context("no template")
}

/// The sandbox's needs that the previous release can take: hosts prepared beforehand, only
/// verified (mode None); the kubelets' flags; the CNI label; and no kube-vip: the second
/// management cluster holds the specs' VIP, so the control-plane endpoint is the one
/// control-plane host itself.
pub fn adapt_previous(documents: &mut [Value]) -> anyhow::Result<()> {
    adapt_with_preparation(documents, &json!({"mode": "None"}))?;
    for document in documents.iter_mut().filter(|d| d["kind"] == "KubeadmControlPlane") {
        without_kube_vip(&mut document["spec"]["kubeadmConfigSpec"]);
    }
    Ok(())
}

/// Prepares the `hosts` (name, address, host key) with this checkout's `capssh prepare run`, all
/// at once: Kubernetes from the artifact mirror, images through the registry mirrors, as the
/// other flavors' `preparation` does. Its output goes to `dir`.
fn prepare_hosts(target: &Target<'_>, hosts: &[(&str, Ipv4Addr, &str)], dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    let key = dir.join("node-key");
    std::fs::write(&key, &target.nodes.client_key.private_key_pem)?;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
    let (ca, credentials) = (dir.join("registry-ca.pem"), dir.join("registry-credentials"));
    std::fs::copy(&target.registry.ca_file, &ca)?;
    std::fs::write(&credentials, format!("{}:{}\n", target.registry.user, target.registry.password()))?;
    std::fs::set_permissions(&credentials, std::fs::Permissions::from_mode(0o600))?;
    let settings = target.settings;
    let itself = settings.registry_endpoint.trim_start_matches("https://").trim_end_matches('/');
    let mut children = Vec::new();
    for (name, address, host_key) in hosts {
        let mut command = std::process::Command::new(crate::tools::capssh());
        command
            .args(["prepare", "run", "--address", &address.to_string(), "--identity"])
            .arg(&key)
            .args(["--host-key", host_key, "--kubernetes-version", target.kubernetes_version, "--mode", "Artifacts"])
            .args(["--artifacts-url", &settings.artifacts_url, "--checksums-sha256", &settings.artifacts_checksums_sha256])
            .arg("--registry-ca-file")
            .arg(&ca)
            .arg("--registry-credentials-file")
            .arg(&credentials);
        for registry in MIRRORED_REGISTRIES.iter().chain([&itself]) {
            command.args(["--registry-mirror", &format!("{registry}={}", settings.registry_endpoint)]);
        }
        let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
        command.stdout(log.try_clone()?).stderr(log);
        children.push((name.to_string(), command.spawn().context("running capssh prepare run")?));
    }
    for (name, mut child) in children {
        let status = child.wait()?;
        anyhow::ensure!(status.success(), "capssh prepare run on {name}: {status}; see {}", dir.join(format!("{name}.log")).display());
    }
    Ok(())
}

/// A kubeadm config spec without kube-vip's files and the commands that edit them (a list left
/// empty goes: the API wants at least one item in one).
fn without_kube_vip(spec: &mut Value) {
    let mentions = |v: &Value| v.to_string().contains("kube-vip");
    let Some(spec) = spec.as_object_mut() else { return };
    for list in ["files", "preKubeadmCommands", "postKubeadmCommands"] {
        if let Some(items) = spec.get_mut(list).and_then(Value::as_array_mut) {
            items.retain(|item| !mentions(if list == "files" { &item["path"] } else { item }));
            if items.is_empty() {
                spec.remove(list);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dry_run_report_says_whether_the_spec_would_run() {
        let report = |state: &str| {
            format!(
                r#"[{{"SpecReports": [
                  {{"LeafNodeType": "SynchronizedBeforeSuite", "State": "passed", "ContainerHierarchyLabels": null, "LeafNodeLabels": null}},
                  {{"LeafNodeType": "It", "State": "passed", "ContainerHierarchyLabels": [["quick-start"]], "LeafNodeLabels": []}},
                  {{"LeafNodeType": "It", "State": "{state}", "ContainerHierarchyLabels": [["clusterctl-upgrade"]], "LeafNodeLabels": []}}
                ]}}]"#
            )
        };
        assert!(selects(&report("passed")).unwrap());
        assert!(!selects(&report("skipped")).unwrap());
        assert!(selects("not json").is_err());
    }

    #[test]
    fn the_previous_template_loses_kube_vip_verifies_its_hosts_and_gets_the_cni() {
        let template = std::fs::read_to_string(crate::tools::repo_root().join("templates/cluster-template.yaml")).unwrap();
        let adapted = adapt_previous_template(&template, &cni_documents().unwrap()).unwrap();
        assert!(!adapted.contains("kube-vip"), "{adapted}");
        assert!(!adapted.contains("SSH_CONTROL_PLANE_ENDPOINT_HOST"), "{adapted}");
        assert!(adapted.contains(&format!("${{{ENDPOINT_VARIABLE}}}")), "{adapted}");
        assert!(adapted.contains("mode: None"), "{adapted}");
        assert!(adapted.contains("fail-cgroupv1"), "{adapted}");
        assert!(adapted.contains("data: ${CNI_RESOURCES}") && adapted.contains("kind: ClusterResourceSet"), "{adapted}");
        assert!(adapted.contains("cni: kube-router"), "{adapted}");
        assert!(!adapted.contains(": []"), "an empty list the API refuses: {adapted}");
    }
}
