//! A Kubernetes package repository for preparation mode Packages, laid out as pkgs.k8s.io
//! (`<root>/core:/stable:/v1.36/deb/`: a flat apt repository with `InRelease` signed by a key
//! made here and published as `Release.key`), because the real one cannot be reached from here.
//! It is served over plain http, so a preparation must name its key
//! ([`PackageRepository::signing_key`], for `packages.signingKey`): capssh does not trust a
//! Release.key fetched over http.
//!
//! It holds kubelet, kubeadm and kubectl packages built with `dpkg-deb` from hack/tools' binaries
//! (kubelet with the systemd unit and kubeadm drop-in the real packages ship), kubernetes-cni from
//! Debian's CNI plugins, and Debian's own containerd and runc packages, which a site's Debian
//! mirror would serve (the nodes reach no Debian mirror). Serve `root` with
//! [`crate::mirror::MirrorServer`].

use crate::mirror::{DEBS, debian_packages};
use crate::tools::repo_root;
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A built repository; removed when dropped.
pub struct PackageRepository {
    /// Serve this folder; `packages.repositoryURL` is its URL.
    pub root: PathBuf,
    /// The Debian version of the Kubernetes packages (`1.36.3-1.1`).
    pub package_version: String,
    /// The ASCII-armored public key InRelease is signed with (also served as Release.key).
    pub signing_key: String,
}

impl Drop for PackageRepository {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

const KUBELET_SERVICE: &str = "[Unit]
Description=kubelet: The Kubernetes Node Agent
Documentation=https://kubernetes.io/docs/
Wants=network-online.target
After=network-online.target

[Service]
ExecStart=/usr/bin/kubelet
Restart=always
StartLimitInterval=0
RestartSec=10

[Install]
WantedBy=multi-user.target
";

const KUBEADM_DROP_IN: &str = "[Service]
Environment=\"KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf\"
Environment=\"KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml\"
EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env
EnvironmentFile=-/etc/default/kubelet
ExecStart=
ExecStart=/usr/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS
";

/// Builds the repository of Kubernetes `version` (v1.36.3) under `root`.
pub fn build_package_repository(root: &Path, version: &str) -> anyhow::Result<PackageRepository> {
    let number = version.strip_prefix('v').context("a version starts with v")?;
    let minor = number.rsplit_once('.').map(|(minor, _)| minor).context("a version has three numbers")?;
    let package_version = format!("{number}-1.1");
    let _ = std::fs::remove_dir_all(root);
    let repo = root.join(format!("core:/stable:/v{minor}/deb"));
    std::fs::create_dir_all(&repo)?;
    let work = root.join(".work");
    let bin = repo_root().join("hack/tools/bin");
    let cni = debian_packages()?.join("usr/lib/cni");

    let mut plugins = Vec::new();
    for entry in std::fs::read_dir(&cni)? {
        let path = entry?.path();
        plugins.push((format!("opt/cni/bin/{}", path.file_name().and_then(|n| n.to_str()).unwrap_or_default()), Content::File(path)));
    }
    // (name, Depends, files)
    let packages: Vec<(&str, &str, Files)> = vec![
        (
            "kubelet",
            "kubernetes-cni",
            vec![
                ("usr/bin/kubelet".into(), Content::File(bin.join(format!("kubelet-{version}")))),
                ("usr/lib/systemd/system/kubelet.service".into(), Content::Text(KUBELET_SERVICE)),
                ("usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf".into(), Content::Text(KUBEADM_DROP_IN)),
            ],
        ),
        ("kubeadm", "kubelet, kubectl", vec![("usr/bin/kubeadm".into(), Content::File(bin.join(format!("kubeadm-{version}"))))]),
        ("kubectl", "", vec![("usr/bin/kubectl".into(), Content::File(bin.join(format!("kubectl-{version}"))))]),
        ("kubernetes-cni", "", plugins),
    ];
    for (name, depends, files) in &packages {
        let version = if *name == "kubernetes-cni" { "1.1.1-1.1" } else { package_version.as_str() };
        build_deb(&work.join(name), &repo.join(format!("{name}_{version}_amd64.deb")), name, version, depends, files)?;
    }
    for package in ["containerd", "runc"] {
        let deb = std::fs::read_dir(DEBS)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&format!("{package}_")) && n.ends_with(".deb")))
            .with_context(|| format!("no {package} package in {DEBS}"))?;
        std::fs::copy(&deb, repo.join(deb.file_name().unwrap_or_default()))?;
    }
    let _ = std::fs::remove_dir_all(&work);
    let signing_key = index_and_sign(&repo, root)?;
    Ok(PackageRepository { root: root.to_path_buf(), package_version, signing_key })
}

enum Content {
    File(PathBuf),
    Text(&'static str),
}

/// A package's files: path inside the package, and where its content comes from.
type Files = Vec<(String, Content)>;

fn build_deb(dir: &Path, out: &Path, name: &str, version: &str, depends: &str, files: &[(String, Content)]) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir.join("DEBIAN"))?;
    let depends = if depends.is_empty() { String::new() } else { format!("Depends: {depends}\n") };
    std::fs::write(
        dir.join("DEBIAN/control"),
        format!(
            "Package: {name}\nVersion: {version}\nArchitecture: amd64\nMaintainer: capssh e2e <e2e@capssh.invalid>\n{depends}Description: {name} for capssh's e2e package repository\n"
        ),
    )?;
    for (path, content) in files {
        let dest = dir.join(path);
        std::fs::create_dir_all(dest.parent().context("a path in a folder")?)?;
        match content {
            Content::File(source) => {
                std::fs::copy(source, &dest).with_context(|| format!("copying {}", source.display()))?;
                std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755))?;
            }
            Content::Text(text) => std::fs::write(&dest, text)?,
        }
    }
    // Uncompressed: building is quick, and every dpkg reads it.
    let status =
        Command::new("dpkg-deb").args(["--root-owner-group", "-Znone", "--build"]).arg(dir).arg(out).stdout(std::process::Stdio::null()).status()?;
    anyhow::ensure!(status.success(), "dpkg-deb --build {name} failed");
    Ok(())
}

/// Packages, Release and InRelease (clear-signed with a key made for this repository), and
/// Release.key (the armoured public key, which apt reads as `signed-by=….asc`); returns that key.
fn index_and_sign(repo: &Path, root: &Path) -> anyhow::Result<String> {
    let scan = Command::new("dpkg-scanpackages")
        .args(["--multiversion", ".", "/dev/null"])
        .current_dir(repo)
        .output()
        .context("running dpkg-scanpackages")?;
    anyhow::ensure!(scan.status.success(), "dpkg-scanpackages: {}", String::from_utf8_lossy(&scan.stderr));
    std::fs::write(repo.join("Packages"), &scan.stdout)?;
    let sha256 = Command::new("sha256sum").arg("Packages").current_dir(repo).output()?;
    let hash = String::from_utf8_lossy(&sha256.stdout).split_whitespace().next().unwrap_or_default().to_string();
    let date = Command::new("date").args(["-u", "-R"]).output()?;
    let release = format!(
        "Origin: capssh-e2e\nLabel: capssh-e2e\nArchitectures: amd64\nDate: {}\nSHA256:\n {hash} {} Packages\n",
        String::from_utf8_lossy(&date.stdout).trim(),
        scan.stdout.len()
    );
    std::fs::write(repo.join("Release"), release)?;

    let home = root.join(".gnupg");
    std::fs::create_dir_all(&home)?;
    std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    let gpg = |args: &[&str]| -> anyhow::Result<Vec<u8>> {
        let out = Command::new("gpg")
            .env("GNUPGHOME", &home)
            .args(["--batch", "--yes", "--pinentry-mode", "loopback", "--passphrase", ""])
            .args(args)
            .current_dir(repo)
            .output()
            .context("running gpg")?;
        anyhow::ensure!(out.status.success(), "gpg {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        Ok(out.stdout)
    };
    gpg(&["--quick-gen-key", "capssh e2e package repository", "ed25519", "sign", "never"])?;
    gpg(&["--clearsign", "--output", "InRelease", "Release"])?;
    let key = String::from_utf8(gpg(&["--armor", "--export"])?).context("gpg --armor --export printed no text")?;
    std::fs::write(repo.join("Release.key"), &key)?;
    // The agent gpg started for the key must not outlive the repository.
    let _ = Command::new("gpgconf").env("GNUPGHOME", &home).args(["--kill", "gpg-agent"]).status();
    std::fs::remove_dir_all(&home)?;
    Ok(key)
}
