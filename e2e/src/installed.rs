//! What `clusterctl init --infrastructure ssh` needs on a real management cluster, made here the
//! way the projects release it: cert-manager's images and its single `cert-manager.yaml`, every
//! manager image, and a local clusterctl repository whose components are installed unchanged
//! (webhooks reached through their Services, certificates issued by cert-manager), with
//! clusterctl's `images` setting sending every image to one registry, as an air-gapped site does.

use crate::images::{
    CAPI_MANAGER_IMAGES, ImageArchive, ImageSpec, RunConfig, build_image, capi_manager_image, capssh_image, distroless_env, distroless_files,
};
use crate::release::publish_capi_released;
use crate::tools::{module_dir, repo_root, tool};
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The newest cert-manager whose controller, webhook and cainjector live in its main Go module
/// (later releases build them from separate modules the Go proxy does not serve).
pub const CERT_MANAGER_VERSION: &str = "v1.11.5";
/// The cert-manager binaries a cluster runs (its ACME solver and cmctl are not needed here).
pub const CERT_MANAGER_COMPONENTS: [&str; 3] = ["controller", "webhook", "cainjector"];
/// The user cert-manager's Containerfiles set.
const CERT_MANAGER_USER: &str = "1000";

/// cert-manager's image of `component` as its release builds it (hack/containers/
/// Containerfile.<component>): distroless static, `USER 1000`, the binary at
/// `/app/cmd/<component>/<component>` as the entrypoint, tagged quay.io/jetstack/cert-manager-<component>.
pub fn cert_manager_image(component: &str) -> anyhow::Result<ImageSpec> {
    let binary = repo_root().join("hack/tools/bin").join(format!("cert-manager-{component}-{CERT_MANAGER_VERSION}"));
    anyhow::ensure!(binary.exists(), "{} is missing: run hack/tools/build.sh", binary.display());
    let path = format!("app/cmd/{component}/{component}");
    let config = RunConfig {
        user: Some(CERT_MANAGER_USER.into()),
        env: distroless_env(),
        entrypoint: vec![format!("/{path}")],
        cmd: vec![],
        working_dir: "/".into(),
    };
    let mut spec = ImageSpec::new(&format!("quay.io/jetstack/cert-manager-{component}:{CERT_MANAGER_VERSION}"), config);
    distroless_files(&mut spec)?;
    spec.file_from(&path, 0o755, &binary)?;
    Ok(spec)
}

/// `cert-manager.yaml` as cert-manager's release renders it: `helm template` of its chart
/// (deploy/charts) with the CRDs of deploy/crds among the templates, after its Namespace. The
/// post-install API check Job is left out: its cmctl image is not built here (clusterctl runs
/// its own check). `kube_version` is the cluster's (helm checks the chart's kubeVersion against it).
pub fn cert_manager_manifest(work: &Path, kube_version: &str) -> anyhow::Result<String> {
    let source = module_dir("cert-manager").join("deploy");
    let chart = work.join("cert-manager-chart");
    let _ = std::fs::remove_dir_all(&chart);
    copy_dir(&source.join("charts/cert-manager"), &chart)?;
    let version = CERT_MANAGER_VERSION;
    let metadata = std::fs::read_to_string(chart.join("Chart.template.yaml"))?
        .replace("version: v0.1.0", &format!("version: {version}"))
        .replace("appVersion: v0.1.0", &format!("appVersion: {version}"))
        .replace("{{IS_PRERELEASE}}", "false");
    std::fs::write(chart.join("Chart.yaml"), metadata)?;
    for entry in std::fs::read_dir(source.join("crds"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "yaml") {
            std::fs::copy(&path, chart.join("templates").join(path.file_name().context("a file name")?))?;
        }
    }
    let out = Command::new(tool("helm"))
        .args(["template", "cert-manager"])
        .arg(&chart)
        .args(["--namespace", "cert-manager", "--kube-version", kube_version, "--set", "startupapicheck.enabled=false"])
        .env("HOME", work)
        .output()
        .context("running helm")?;
    anyhow::ensure!(out.status.success(), "helm template cert-manager: {}", String::from_utf8_lossy(&out.stderr));
    let namespace = std::fs::read_to_string(source.join("manifests/01-namespace.yaml"))?;
    Ok(format!("{namespace}\n{}", String::from_utf8(out.stdout)?))
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
            // The module cache is read-only; the copy is ours to write.
            let mut permissions = std::fs::metadata(&target)?.permissions();
            std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o644);
            std::fs::set_permissions(&target, permissions)?;
        }
    }
    Ok(())
}

/// Every image `clusterctl init` installs: capssh's manager (from `capssh_binary`), Cluster API's
/// three managers and cert-manager's three components, archived into `cache`.
pub fn install_images(capssh_binary: &Path, cache: &Path) -> anyhow::Result<Vec<ImageArchive>> {
    // One image in memory at a time: the managers are about 100 MB each.
    let mut archives = vec![build_image(&capssh_image(capssh_binary)?, cache)?];
    for (binary, image) in CAPI_MANAGER_IMAGES {
        archives.push(build_image(&capi_manager_image(binary, image)?, cache)?);
    }
    for component in CERT_MANAGER_COMPONENTS {
        archives.push(build_image(&cert_manager_image(component)?, cache)?);
    }
    Ok(archives)
}

/// A copy of `binary` without its debug sections (a debug build is several hundred MB, most of it
/// debug information a Pod never reads), kept in `dir`.
pub fn stripped(binary: &Path, dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let out = dir.join(binary.file_name().context("a file name")?);
    let status = Command::new("objcopy").arg("--strip-debug").arg(binary).arg(&out).status().context("running objcopy (binutils)")?;
    anyhow::ensure!(status.success(), "objcopy --strip-debug {}", binary.display());
    Ok(out)
}

/// Where clusterctl's `images: all: repository: <repository>` sends `reference`: its last path
/// element (name and tag) under `repository`.
pub fn in_repository(reference: &str, repository: &str) -> String {
    let last = reference.rsplit_once('/').map_or(reference, |(_, last)| last);
    format!("{repository}/{last}")
}

/// A local clusterctl repository at `root` for a cluster that runs the providers as Pods:
/// Cluster API's providers as released, capssh's release from `capssh_release` (its folder, as
/// hack/release-manifests.sh writes it) and cert-manager; clusterctl.yaml names them and sends
/// every image to `image_repository`. `kube_version` is the management cluster's.
pub fn publish(
    root: &Path,
    capssh_release: &Path,
    capssh_version: &str,
    image_repository: &str,
    kube_version: &str,
) -> anyhow::Result<crate::clusterctl::LocalRepository> {
    std::fs::create_dir_all(root)?;
    let mut config = String::from("# Generated by the e2e harness (e2e/src/installed.rs).\nproviders:\n");
    config.push_str(&publish_capi_released(root)?);
    let ssh = root.join("infrastructure-ssh").join(capssh_version);
    copy_dir(capssh_release, &ssh)?;
    config.push_str(&format!("- name: ssh\n  type: InfrastructureProvider\n  url: {}\n", ssh.join("infrastructure-components.yaml").display()));
    let cert_manager = root.join("cert-manager").join(CERT_MANAGER_VERSION);
    std::fs::create_dir_all(&cert_manager)?;
    std::fs::write(cert_manager.join("cert-manager.yaml"), cert_manager_manifest(root, kube_version)?)?;
    config.push_str(&settings_yaml(&cert_manager.join("cert-manager.yaml"), image_repository));
    std::fs::write(root.join("clusterctl.yaml"), config)?;
    crate::clusterctl::LocalRepository::at(root, capssh_version)
}

/// The top-level keys of [`publish`]'s clusterctl.yaml that keep `clusterctl init` inside the
/// sandbox: cert-manager from the local manifest, every image from the registry.
pub const INSTALL_SETTINGS: [&str; 2] = ["cert-manager", "images"];

/// [`INSTALL_SETTINGS`] as [`publish`] writes them.
fn settings_yaml(cert_manager_manifest: &Path, image_repository: &str) -> String {
    format!(
        "cert-manager:\n  url: {}\n  version: {CERT_MANAGER_VERSION}\nimages:\n  all:\n    repository: {image_repository}\n",
        cert_manager_manifest.display()
    )
}

/// [`INSTALL_SETTINGS`] of the clusterctl.yaml [`publish`] wrote in `root`, as one object (for
/// another clusterctl config that must install the same way: e2e/capi's, see
/// [`crate::capi_specs`]).
pub fn install_settings(root: &Path) -> anyhow::Result<serde_json::Value> {
    let path = root.join("clusterctl.yaml");
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    let config = crate::apply::documents(&text)?.into_iter().next().with_context(|| format!("{} is empty", path.display()))?;
    let mut settings = serde_json::Map::new();
    for key in INSTALL_SETTINGS {
        let value = config.get(key).with_context(|| format!("{} has no {key}", path.display()))?;
        settings.insert(key.to_string(), value.clone());
    }
    Ok(settings.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Our cert-manager images run what cert-manager's own Containerfiles say (user, entrypoint).
    #[test]
    fn cert_manager_images_agree_with_their_containerfiles() {
        let containers = module_dir("cert-manager").join("hack/containers");
        for component in CERT_MANAGER_COMPONENTS {
            let file = std::fs::read_to_string(containers.join(format!("Containerfile.{component}"))).unwrap();
            let instruction = |name: &str| file.lines().find_map(|l| l.strip_prefix(name)).map(str::trim).unwrap().to_string();
            let spec = cert_manager_image(component).unwrap();
            assert_eq!(spec.config.user.as_deref(), Some(instruction("USER ").as_str()), "{component}");
            assert_eq!(serde_json::to_string(&spec.config.entrypoint).unwrap(), instruction("ENTRYPOINT "), "{component}");
            let copied = instruction(&format!("COPY {component} "));
            assert!(spec.file_content(copied.trim_start_matches('/')).is_some_and(|b| b.len() > 1_000_000), "{component}: no binary at {copied}");
        }
    }

    #[test]
    fn the_install_settings_are_those_publish_writes() {
        let dir = std::env::temp_dir().join(format!("capssh-install-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let manifest = dir.join("cert-manager/v1.11.5/cert-manager.yaml");
        let text = format!("providers:\n- name: ssh\n  type: InfrastructureProvider\n  url: /x\n{}", settings_yaml(&manifest, "r:1/x"));
        std::fs::write(dir.join("clusterctl.yaml"), text).unwrap();
        let settings = install_settings(&dir).unwrap();
        assert_eq!(
            settings,
            serde_json::json!({
                "cert-manager": {"url": manifest.display().to_string(), "version": CERT_MANAGER_VERSION},
                "images": {"all": {"repository": "r:1/x"}}
            })
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn images_land_under_the_configured_repository_by_name_and_tag() {
        assert_eq!(
            in_repository("registry.k8s.io/cluster-api/cluster-api-controller:v1.14.2", "198.18.0.129:5000/install"),
            "198.18.0.129:5000/install/cluster-api-controller:v1.14.2"
        );
        assert_eq!(in_repository("quay.io/jetstack/cert-manager-webhook:v1.11.5", "r:1/x"), "r:1/x/cert-manager-webhook:v1.11.5");
        assert_eq!(in_repository("busybox:1", "r:1/x"), "r:1/x/busybox:1");
    }
}
