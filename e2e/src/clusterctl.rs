//! The real clusterctl, pointed at a local repository made by hack/release-manifests.sh.

use crate::tools::{repo_root, tool};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A local clusterctl repository holding this checkout's provider release.
pub struct LocalRepository {
    /// Root of the repository (holds clusterctl.yaml and infrastructure-ssh/<version>/).
    pub root: PathBuf,
    /// The version published in it.
    pub version: String,
    xdg: PathBuf,
}

impl LocalRepository {
    /// Runs hack/release-manifests.sh (kustomize build of config/default, metadata, templates).
    pub fn publish(work: &Path) -> anyhow::Result<Self> {
        let out = Command::new(repo_root().join("hack/release-manifests.sh")).current_dir(repo_root()).output()?;
        anyhow::ensure!(out.status.success(), "release-manifests.sh failed: {}", String::from_utf8_lossy(&out.stderr));
        let root = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        let version = format!("v{}", capssh::VERSION);
        let xdg = work.join("xdg");
        std::fs::create_dir_all(&xdg)?;
        Ok(Self { root, version, xdg })
    }

    /// A repository written by someone else (see [`crate::release::publish`]): `root` holds its
    /// clusterctl.yaml; clusterctl keeps its own state under `root/xdg`.
    pub fn at(root: &Path, version: &str) -> anyhow::Result<Self> {
        let xdg = root.join("xdg");
        std::fs::create_dir_all(&xdg)?;
        Ok(Self { root: root.to_path_buf(), version: version.to_string(), xdg })
    }

    pub fn components(&self) -> PathBuf {
        self.root.join("infrastructure-ssh").join(&self.version).join("infrastructure-components.yaml")
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.root.join("infrastructure-ssh").join(&self.version).join(name)
    }

    /// Runs clusterctl with this repository's config; returns stdout, or stderr as the error.
    pub fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Result<String, String> {
        let mut cmd = Command::new(tool("clusterctl"));
        cmd.args(args)
            .arg("--config")
            .arg(self.root.join("clusterctl.yaml"))
            .env("CLUSTERCTL_DISABLE_VERSIONCHECK", "true")
            .env("XDG_CONFIG_HOME", &self.xdg)
            .env("HOME", &self.xdg);
        for (key, value) in env {
            cmd.env(key, value);
        }
        let out = cmd.output().map_err(|err| err.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!("{}{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout)))
        }
    }
}
