//! Container images for hosts that cannot pull: OCI image archives (an `oci-layout`, an
//! `index.json` and `blobs/sha256/…`, as `ctr -n k8s.io images import` reads them), built from
//! the binaries hack/tools builds, and tagged exactly as `kubeadm config images list
//! --kubernetes-version <v>` names them, so kubeadm finds them on the host and pulls nothing.
//!
//! Each image is one uncompressed layer holding its binary at `/usr/local/bin/<name>` (kubeadm's
//! static pod manifests call it by name, so the image's `PATH` must hold it), with that binary as
//! the `Entrypoint`. `pause` is a tiny static C program ([`PAUSE_C`]) at `/pause`. The etcd image
//! carries hack/tools' etcd under the tag kubeadm asks for (its probes are HTTP, no etcdctl).
//! kube-proxy and CoreDNS are not built: suites that need no add-ons skip those kubeadm phases.
//!
//! Archives are deterministic (fixed mtimes, sorted entries) and cached by content under
//! [`CACHE`]: the same binary and tag give the same file, made once.

use crate::tools::repo_root;
use anyhow::{Context, bail};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where built archives (and the compiled pause) are kept between runs.
pub const CACHE: &str = "/var/lib/capssh-e2e/images-cache";

/// Bumped when the archive format changes, so old cache entries are not reused.
const FORMAT: &str = "capssh-e2e-oci-1";

/// The sandbox ("pause") program: sleeps until SIGTERM or SIGINT, reaping children meanwhile.
pub const PAUSE_C: &str = r#"#include <signal.h>
#include <stddef.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, NULL, WNOHANG) > 0) {} }

int main(void) {
  struct sigaction sa = {0};
  sa.sa_handler = stop;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  sa.sa_handler = reap;
  sa.sa_flags = SA_NOCLDSTOP | SA_RESTART;
  sigaction(SIGCHLD, &sa, NULL);
  for (;;) pause();
}
"#;

/// One image archive.
#[derive(Clone, Debug)]
pub struct ImageArchive {
    /// The image's full reference, e.g. `registry.k8s.io/kube-apiserver:v1.36.3`.
    pub reference: String,
    pub path: PathBuf,
}

/// The images kubeadm `version` needs for a control plane (kube-apiserver, kube-controller-manager,
/// kube-scheduler, etcd, pause), from hack/tools/bin/<name>-<version>, etcd from hack/tools'
/// etcd, pause compiled here.
pub fn control_plane_images(version: &str) -> anyhow::Result<Vec<ImageArchive>> {
    let bin = repo_root().join("hack/tools/bin");
    let kubeadm = bin.join(format!("kubeadm-{version}"));
    let listed = Command::new(&kubeadm)
        .args(["config", "images", "list", "--kubernetes-version", version])
        .output()
        .with_context(|| format!("running {}", kubeadm.display()))?;
    anyhow::ensure!(listed.status.success(), "kubeadm config images list: {}", String::from_utf8_lossy(&listed.stderr));
    let listed = String::from_utf8(listed.stdout)?;
    let reference = |name: &str| -> anyhow::Result<String> {
        listed
            .lines()
            .find(|l| l.rsplit_once('/').is_some_and(|(_, last)| last.split(':').next() == Some(name)))
            .map(str::to_string)
            .with_context(|| format!("kubeadm {version} lists no {name} image:\n{listed}"))
    };
    let mut images = Vec::new();
    for name in ["kube-apiserver", "kube-controller-manager", "kube-scheduler"] {
        let binary = bin.join(format!("{name}-{version}"));
        anyhow::ensure!(binary.exists(), "{} is missing: run hack/tools/build.sh", binary.display());
        images.push(build(&reference(name)?, &binary, &format!("usr/local/bin/{name}"))?);
    }
    let etcd = std::fs::canonicalize(bin.join("etcd")).context("hack/tools/bin/etcd is missing: run hack/tools/build.sh")?;
    images.push(build(&reference("etcd")?, &etcd, "usr/local/bin/etcd")?);
    images.push(build(&reference("pause")?, &pause_binary()?, "pause")?);
    Ok(images)
}

/// The pause program, compiled statically (cached by its source).
pub fn pause_binary() -> anyhow::Result<PathBuf> {
    let out = Path::new(CACHE).join(format!("pause-{}", &hex(&Sha256::digest(PAUSE_C))[..16]));
    if out.exists() {
        return Ok(out);
    }
    std::fs::create_dir_all(CACHE)?;
    let source = out.with_extension("c");
    std::fs::write(&source, PAUSE_C)?;
    let partial = out.with_extension(format!("partial-{}", std::process::id()));
    let status = Command::new("gcc").args(["-static", "-O2", "-s", "-o"]).arg(&partial).arg(&source).status().context("running gcc")?;
    anyhow::ensure!(status.success(), "gcc -static failed for pause (hack/install-deps.sh installs libc6-dev)");
    std::fs::rename(&partial, &out)?;
    Ok(out)
}

/// Builds (or finds in the cache) the archive of `reference` with `binary` at `/<path>` as its
/// entrypoint.
pub fn build(reference: &str, binary: &Path, path: &str) -> anyhow::Result<ImageArchive> {
    let content = std::fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
    let key = hex(&Sha256::digest([FORMAT.as_bytes(), b"\0", reference.as_bytes(), b"\0", path.as_bytes(), b"\0", &content].concat()));
    let (_, last) = reference.rsplit_once('/').unwrap_or(("", reference));
    let file = Path::new(CACHE).join(format!("{}-{}.tar", last.replace(':', "_"), &key[..16]));
    if !file.exists() {
        std::fs::create_dir_all(CACHE)?;
        let partial = file.with_extension(format!("partial-{}", std::process::id()));
        write_archive(&partial, reference, &content, path).with_context(|| format!("writing {}", partial.display()))?;
        std::fs::rename(&partial, &file)?;
    }
    Ok(ImageArchive { reference: reference.to_string(), path: file })
}

fn write_archive(out: &Path, reference: &str, binary: &[u8], path: &str) -> anyhow::Result<()> {
    let Some((_, tag)) = reference.rsplit_once(':').filter(|(repo, _)| !repo.is_empty()) else {
        bail!("{reference} has no tag");
    };
    // The layer: the folders on the way, then the binary.
    let mut layer = Tar::default();
    let mut dir = String::new();
    for part in path.split('/').take(path.split('/').count() - 1) {
        dir.push_str(part);
        dir.push('/');
        layer.entry(&dir, 0o755, Kind::Dir, &[]);
    }
    layer.entry("tmp/", 0o1777, Kind::Dir, &[]);
    layer.entry(path, 0o755, Kind::File, binary);
    let layer = layer.finish();
    let layer_digest = hex(&Sha256::digest(&layer));

    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Entrypoint": [format!("/{path}")], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_digest}")]},
        "history": [{"created_by": format!("capssh e2e images.rs: /{path}")}]
    }))?;
    let config_digest = hex(&Sha256::digest(&config));
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{config_digest}"), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": format!("sha256:{layer_digest}"), "size": layer.len()}]
    }))?;
    let manifest_digest = hex(&Sha256::digest(&manifest));
    // containerd names the image from io.containerd.image.name; the OCI ref name is the tag.
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha256:{manifest_digest}"), "size": manifest.len(),
                       "platform": {"architecture": "amd64", "os": "linux"},
                       "annotations": {"io.containerd.image.name": reference, "org.opencontainers.image.ref.name": tag}}]
    }))?;

    let mut archive = Tar::default();
    archive.entry("blobs/", 0o755, Kind::Dir, &[]);
    archive.entry("blobs/sha256/", 0o755, Kind::Dir, &[]);
    archive.entry(&format!("blobs/sha256/{config_digest}"), 0o644, Kind::File, &config);
    archive.entry(&format!("blobs/sha256/{layer_digest}"), 0o644, Kind::File, &layer);
    archive.entry(&format!("blobs/sha256/{manifest_digest}"), 0o644, Kind::File, &manifest);
    archive.entry("index.json", 0o644, Kind::File, &index);
    archive.entry("oci-layout", 0o644, Kind::File, br#"{"imageLayoutVersion":"1.0.0"}"#);
    let mut file = std::fs::File::create(out)?;
    file.write_all(&archive.finish())?;
    file.sync_all()?;
    Ok(())
}

enum Kind {
    File,
    Dir,
}

/// A ustar archive in memory: fixed owner (root) and mtime, so equal input gives equal bytes.
#[derive(Default)]
struct Tar {
    bytes: Vec<u8>,
}

impl Tar {
    fn entry(&mut self, name: &str, mode: u32, kind: Kind, content: &[u8]) {
        assert!(name.len() < 100, "tar names here are short: {name}");
        let mut header = [0u8; 512];
        header[..name.len()].copy_from_slice(name.as_bytes());
        let octal = |field: &mut [u8], value: u64| {
            let text = format!("{value:0width$o}", width = field.len() - 1);
            field[..text.len()].copy_from_slice(text.as_bytes());
        };
        octal(&mut header[100..108], u64::from(mode));
        octal(&mut header[108..116], 0);
        octal(&mut header[116..124], 0);
        octal(&mut header[124..136], content.len() as u64);
        octal(&mut header[136..148], 0);
        header[156] = match kind {
            Kind::File => b'0',
            Kind::Dir => b'5',
        };
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        header[265..269].copy_from_slice(b"root");
        header[297..301].copy_from_slice(b"root");
        header[148..156].copy_from_slice(b"        ");
        let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
        let text = format!("{sum:06o}\0 ");
        header[148..156].copy_from_slice(text.as_bytes());
        self.bytes.extend_from_slice(&header);
        self.bytes.extend_from_slice(content);
        self.bytes.resize(self.bytes.len().div_ceil(512) * 512, 0);
    }

    fn finish(mut self) -> Vec<u8> {
        self.bytes.extend_from_slice(&[0u8; 1024]);
        self.bytes
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archives_are_tar_files_that_tar_reads() {
        let dir = std::env::temp_dir().join(format!("capssh-images-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("x.tar");
        write_archive(&out, "registry.k8s.io/pause:3.10.2", b"#!/bin/true\n", "pause").unwrap();
        let list = Command::new("tar").arg("-tvf").arg(&out).output().unwrap();
        assert!(list.status.success(), "{}", String::from_utf8_lossy(&list.stderr));
        let text = String::from_utf8_lossy(&list.stdout);
        assert!(text.contains("index.json") && text.contains("oci-layout") && text.matches("blobs/sha256/").count() == 4, "{text}");
        let index = Command::new("tar").arg("-xOf").arg(&out).arg("index.json").output().unwrap();
        let index: serde_json::Value = serde_json::from_slice(&index.stdout).unwrap();
        assert_eq!(index["manifests"][0]["annotations"]["io.containerd.image.name"], "registry.k8s.io/pause:3.10.2");
        assert_eq!(index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"], "3.10.2");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
