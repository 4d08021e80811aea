//! Container images as OCI image archives (an `oci-layout`, an `index.json` and
//! `blobs/sha256/…`, as `ctr -n k8s.io images import` reads them and `crane push` sends them once
//! unpacked), built without a container engine:
//!
//! - for hosts that cannot pull: the control-plane images from the binaries hack/tools builds,
//!   tagged exactly as `kubeadm config images list --kubernetes-version <v>` names them, so kubeadm
//!   finds them on the host and pulls nothing. Each holds its binary at `/usr/local/bin/<name>`
//!   (kubeadm's static pod manifests call it by name, so the image's `PATH` must hold it) as the
//!   `Entrypoint`. `pause` is a tiny static C program ([`PAUSE_C`]) at `/pause`. The etcd image
//!   carries hack/tools' etcd under the tag kubeadm asks for (its probes are HTTP, no etcdctl).
//!   kube-proxy and CoreDNS are not built: suites that need no add-ons skip those kubeadm phases;
//! - for a management cluster (`make images`): capssh's manager image as the Dockerfile describes
//!   it ([`capssh_image`]) and Cluster API's core, kubeadm bootstrap and kubeadm control-plane
//!   manager images as upstream ships them ([`capi_manager_image`]), on the few files of a
//!   distroless base ([`distroless_files`]).
//!
//! An image is one uncompressed layer. Archives are deterministic (entries sorted, mtimes 0,
//! owner root unless the owner matters) and cached by content: the file is named by a digest of
//! everything in it, so the same inputs give the same file, written once.

use crate::tools::repo_root;
use anyhow::{Context, bail};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where built archives (and the compiled pause) are kept between runs.
pub const CACHE: &str = "/var/lib/capssh-e2e/images-cache";

/// Bumped when the archive format changes, so old cache entries are not reused.
const FORMAT: &str = "capssh-e2e-oci-2";

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
    /// The digest of its image manifest, `sha256:…`: what a registry answers for it.
    pub digest: String,
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

/// Builds (or finds in [`CACHE`]) the archive of `reference` with `binary` at `/<path>` as its
/// entrypoint.
pub fn build(reference: &str, binary: &Path, path: &str) -> anyhow::Result<ImageArchive> {
    let config = RunConfig { user: None, env: vec![PATH_ENV.into()], entrypoint: vec![format!("/{path}")], cmd: vec![], working_dir: "/".into() };
    let mut spec = ImageSpec::new(reference, config);
    spec.dir("tmp", 0o1777, ROOT);
    spec.file_from(path, 0o755, binary)?;
    build_image(&spec, Path::new(CACHE))
}

const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const ROOT: u32 = 0;
/// distroless' `nonroot` user and group, which Kubernetes sees as a numeric, non-zero user.
const NONROOT: u32 = 65532;
const CA_BUNDLE: &str = "etc/ssl/certs/ca-certificates.crt";

/// What a container runs: the `config` object of an OCI image configuration.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cmd: Vec<String>,
    pub working_dir: String,
}

/// One image: its reference, what it runs, and its one layer (paths without the leading `/`).
pub struct ImageSpec {
    pub reference: String,
    pub config: RunConfig,
    layer: BTreeMap<String, Entry>,
}

enum Entry {
    Dir { mode: u32, owner: u32 },
    File { mode: u32, content: Vec<u8> },
    Symlink { target: String },
}

impl ImageSpec {
    pub fn new(reference: &str, config: RunConfig) -> Self {
        Self { reference: reference.to_string(), config, layer: BTreeMap::new() }
    }

    /// A folder; the folders on its way are added as root's, 0755.
    pub fn dir(&mut self, path: &str, mode: u32, owner: u32) {
        self.parents(path);
        self.layer.insert(path.to_string(), Entry::Dir { mode, owner });
    }

    /// A file owned by root.
    pub fn file(&mut self, path: &str, mode: u32, content: Vec<u8>) {
        self.parents(path);
        self.layer.insert(path.to_string(), Entry::File { mode, content });
    }

    /// A symbolic link at `path` to `target` (as `ln -s target path` makes it).
    pub fn symlink(&mut self, path: &str, target: &str) {
        self.parents(path);
        self.layer.insert(path.to_string(), Entry::Symlink { target: target.to_string() });
    }

    /// A file with the content of `source` (through symlinks).
    pub fn file_from(&mut self, path: &str, mode: u32, source: &Path) -> anyhow::Result<()> {
        let content = std::fs::read(source).with_context(|| format!("reading {}", source.display()))?;
        self.file(path, mode, content);
        Ok(())
    }

    /// The content of the file at `path` in the layer, if there is one.
    pub fn file_content(&self, path: &str) -> Option<&[u8]> {
        match self.layer.get(path) {
            Some(Entry::File { content, .. }) => Some(content),
            _ => None,
        }
    }

    fn parents(&mut self, path: &str) {
        for dir in Path::new(path).ancestors().skip(1) {
            let dir = dir.to_str().expect("image paths are UTF-8");
            if dir.is_empty() {
                break;
            }
            self.layer.entry(dir.to_string()).or_insert(Entry::Dir { mode: 0o755, owner: ROOT });
        }
    }

    /// The layer as a tar file. Paths sort parents first, so a folder comes before its content.
    fn layer_tar(&self) -> anyhow::Result<Vec<u8>> {
        let mut tar = Tar::new(Vec::new());
        for (path, entry) in &self.layer {
            match entry {
                Entry::Dir { mode, owner } => tar.entry(&format!("{path}/"), *mode, *owner, Kind::Dir, &[])?,
                Entry::File { mode, content } => tar.entry(path, *mode, ROOT, Kind::File, content)?,
                Entry::Symlink { target } => tar.entry(path, 0o777, ROOT, Kind::Symlink(target), &[])?,
            }
        }
        Ok(tar.finish()?)
    }

    /// The image configuration, for a layer whose (uncompressed) digest is `layer_digest`.
    pub fn config_blob(&self, layer_digest: &str) -> anyhow::Result<Vec<u8>> {
        Ok(serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": self.config,
            "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_digest}")]},
            "history": [{"created_by": format!("capssh e2e images.rs: {}", self.reference)}]
        }))?)
    }
}

/// Writes the archive of `spec` into `cache` unless a file with the same content is there.
pub fn build_image(spec: &ImageSpec, cache: &Path) -> anyhow::Result<ImageArchive> {
    let reference = &spec.reference;
    let Some((_, tag)) = reference.rsplit_once(':').filter(|(repo, _)| !repo.is_empty()) else {
        bail!("{reference} has no tag");
    };
    let layer = spec.layer_tar()?;
    let layer_digest = hex(&Sha256::digest(&layer));
    let config = spec.config_blob(&layer_digest)?;
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
    // The index names every other blob by digest, so it stands for the whole archive.
    let key = hex(&Sha256::digest([FORMAT.as_bytes(), b"\0", &index].concat()));
    let (_, last) = reference.rsplit_once('/').unwrap_or(("", reference));
    let file = cache.join(format!("{}-{}.tar", last.replace(':', "_"), &key[..16]));
    if !file.exists() {
        std::fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
        let partial = file.with_extension(format!("partial-{}", std::process::id()));
        let write = || -> anyhow::Result<()> {
            let out = std::fs::File::create(&partial)?;
            let mut archive = Tar::new(std::io::BufWriter::new(out));
            archive.entry("blobs/", 0o755, ROOT, Kind::Dir, &[])?;
            archive.entry("blobs/sha256/", 0o755, ROOT, Kind::Dir, &[])?;
            archive.entry(&format!("blobs/sha256/{config_digest}"), 0o644, ROOT, Kind::File, &config)?;
            archive.entry(&format!("blobs/sha256/{layer_digest}"), 0o644, ROOT, Kind::File, &layer)?;
            archive.entry(&format!("blobs/sha256/{manifest_digest}"), 0o644, ROOT, Kind::File, &manifest)?;
            archive.entry("index.json", 0o644, ROOT, Kind::File, &index)?;
            archive.entry("oci-layout", 0o644, ROOT, Kind::File, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
            let out = archive.finish()?.into_inner().map_err(|err| err.into_error())?;
            out.sync_all()?;
            Ok(())
        };
        write().with_context(|| format!("writing {}", partial.display()))?;
        std::fs::rename(&partial, &file)?;
    }
    Ok(ImageArchive { reference: reference.clone(), path: file, digest: format!("sha256:{manifest_digest}") })
}

/// The files of distroless' base images that programs look for: the users (`nonroot` is 65532),
/// name-service order, CA certificates (this machine's bundle) and the home and temp folders.
pub fn distroless_files(spec: &mut ImageSpec) -> anyhow::Result<()> {
    let users = "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n";
    spec.file("etc/passwd", 0o644, users.into());
    spec.file("etc/group", 0o644, "root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n".into());
    spec.file(
        "etc/nsswitch.conf",
        0o644,
        "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n".into(),
    );
    spec.file_from(CA_BUNDLE, 0o644, &Path::new("/").join(CA_BUNDLE)).context("the CA bundle (Debian package ca-certificates)")?;
    spec.dir("root", 0o700, ROOT);
    spec.dir("home/nonroot", 0o700, NONROOT);
    spec.dir("tmp", 0o1777, ROOT);
    Ok(())
}

/// The environment of distroless' bases.
pub fn distroless_env() -> Vec<String> {
    vec![PATH_ENV.into(), format!("SSL_CERT_FILE=/{CA_BUNDLE}")]
}

/// capssh's manager image as the Dockerfile describes it, built without docker: the binary at
/// `/capssh` and the shared libraries it links, taken from this Debian 12 machine where `ldd`
/// finds them (the glibc and libgcc that distroless cc-debian12 carries), on [`distroless_files`].
/// Tagged with this checkout's version.
pub fn capssh_image(binary: &Path) -> anyhow::Result<ImageSpec> {
    capssh_image_of(binary, &format!("v{}", capssh::VERSION))
}

/// [`capssh_image`] of another release's binary, tagged `version` (e.g. `v0.1.0`).
pub fn capssh_image_of(binary: &Path, version: &str) -> anyhow::Result<ImageSpec> {
    let config = RunConfig {
        user: Some(format!("{NONROOT}:{NONROOT}")),
        env: distroless_env(),
        entrypoint: vec!["/capssh".into()],
        cmd: vec!["manager".into()],
        working_dir: "/home/nonroot".into(),
    };
    let mut spec = ImageSpec::new(&format!("ghcr.io/capssh/capssh:{version}"), config);
    distroless_files(&mut spec)?;
    spec.file_from("capssh", 0o755, binary)?;
    for library in linked_libraries(binary)? {
        let mode = std::fs::metadata(&library)?.permissions().mode() & 0o777;
        let inside = library.strip_prefix("/").expect("ldd prints absolute paths").to_str().context("a library path that is not UTF-8")?;
        spec.file_from(inside, mode, &library)?;
    }
    Ok(spec)
}

/// The shared libraries `binary` loads (and the loader), where `ldd` finds them; none for a
/// static binary.
pub fn linked_libraries(binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = Command::new("ldd").arg(binary).output().context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let complaint = String::from_utf8_lossy(&out.stderr);
        anyhow::ensure!(complaint.contains("not a dynamic executable"), "ldd {}: {text}{complaint}", binary.display());
        return Ok(Vec::new());
    }
    let mut libraries = Vec::new();
    for line in text.lines() {
        let found = line.split_once("=>").map_or(line, |(_, found)| found).trim();
        anyhow::ensure!(!found.starts_with("not found"), "{} needs a library this machine lacks: {line}", binary.display());
        if let Some(path) = found.split_whitespace().next().filter(|p| p.starts_with('/')) {
            libraries.push(PathBuf::from(path));
        }
    }
    Ok(libraries)
}

/// The Cluster API manager images `make images` builds: hack/tools binary and image name (as
/// Cluster API's Makefile names them under registry.k8s.io/cluster-api).
pub const CAPI_MANAGER_IMAGES: &[(&str, &str)] = &[
    ("capi-manager", "cluster-api-controller"),
    ("capi-kubeadm-bootstrap-manager", "kubeadm-bootstrap-controller"),
    ("capi-kubeadm-control-plane-manager", "kubeadm-control-plane-controller"),
];

/// A Cluster API manager image as upstream's Dockerfile makes it (distroless static, the binary at
/// `/manager`, `USER 65532`), from hack/tools' binary `tool`, tagged with the version it was
/// built at.
pub fn capi_manager_image(tool: &str, image: &str) -> anyhow::Result<ImageSpec> {
    let link = repo_root().join("hack/tools/bin").join(tool);
    let built = std::fs::read_link(&link).with_context(|| format!("{} is missing: run hack/tools/build.sh", link.display()))?;
    let version = built
        .to_str()
        .and_then(|name| name.strip_prefix(&format!("{tool}-")))
        .with_context(|| format!("{} points to {}, not {tool}-<version>", link.display(), built.display()))?;
    let config = RunConfig {
        user: Some(NONROOT.to_string()),
        env: distroless_env(),
        entrypoint: vec!["/manager".into()],
        cmd: vec![],
        working_dir: "/".into(),
    };
    let mut spec = ImageSpec::new(&format!("registry.k8s.io/cluster-api/{image}:{version}"), config);
    distroless_files(&mut spec)?;
    spec.file_from("manager", 0o755, &link)?;
    Ok(spec)
}

/// `reference` in `registry` (host[:port]) instead of its own: where a mirror keeps it, the path
/// unchanged (`registry.k8s.io/cluster-api/x:v1` → `<registry>/cluster-api/x:v1`).
pub fn relocate(reference: &str, registry: &str) -> String {
    let path = match reference.split_once('/') {
        Some((host, path)) if host.contains(['.', ':']) || host == "localhost" => path,
        _ => reference,
    };
    format!("{registry}/{path}")
}

/// Pushes `archive` to `target` with hack/tools' crane and returns the digest the registry
/// stored. crane reads credentials from `$DOCKER_CONFIG/config.json` and trusts the CAs of
/// `SSL_CERT_FILE`: from this process's environment plus `env`, never from flags.
pub fn push(archive: &ImageArchive, target: &str, env: &[(&str, PathBuf)]) -> anyhow::Result<String> {
    // crane pushes an OCI layout from a folder as it is, so the registry gets the archive's manifest.
    let layout = archive.path.with_extension(format!("layout-{}", std::process::id()));
    std::fs::create_dir_all(&layout)?;
    let pushed = (|| {
        let status = Command::new("tar").arg("-xf").arg(&archive.path).arg("-C").arg(&layout).status().context("running tar")?;
        anyhow::ensure!(status.success(), "unpacking {}", archive.path.display());
        let out = Command::new(crate::tools::tool("crane"))
            .arg("push")
            .arg(&layout)
            .arg(target)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .context("running crane")?;
        anyhow::ensure!(out.status.success(), "crane push {target}: {}", String::from_utf8_lossy(&out.stderr));
        let printed = String::from_utf8_lossy(&out.stdout);
        printed.trim().rsplit_once('@').map(|(_, digest)| digest.to_string()).with_context(|| format!("crane push printed no digest: {printed}"))
    })();
    let _ = std::fs::remove_dir_all(&layout);
    pushed
}

/// The digest of the image manifest an archive's `index.json` names.
pub fn archive_manifest_digest(archive: &Path) -> anyhow::Result<String> {
    let index = read_member(archive, "index.json")?.with_context(|| format!("{} has no index.json", archive.display()))?;
    let index: serde_json::Value = serde_json::from_slice(&index)?;
    index["manifests"][0]["digest"].as_str().map(str::to_string).with_context(|| format!("{}: index.json names no manifest", archive.display()))
}

/// The content of the member `name` of a ustar file, reading headers and skipping contents.
fn read_member(archive: &Path, name: &str) -> anyhow::Result<Option<Vec<u8>>> {
    let mut file = std::io::BufReader::new(std::fs::File::open(archive).with_context(|| format!("opening {}", archive.display()))?);
    let mut header = [0u8; 512];
    loop {
        file.read_exact(&mut header)?;
        if header.iter().all(|&b| b == 0) {
            return Ok(None);
        }
        let field = |range: std::ops::Range<usize>| String::from_utf8_lossy(&header[range]).trim_end_matches('\0').trim().to_string();
        let size = u64::from_str_radix(&field(124..136), 8).context("a tar size field")?;
        let padded = size.div_ceil(512) * 512;
        if field(0..100) == name {
            let mut content = vec![0u8; size as usize];
            file.read_exact(&mut content)?;
            return Ok(Some(content));
        }
        file.seek_relative(padded as i64)?;
    }
}

enum Kind<'a> {
    File,
    Dir,
    /// A symbolic link to the target.
    Symlink(&'a str),
}

/// A ustar writer: fixed mtime (0) and owner names for the ids, so equal input gives equal bytes.
struct Tar<W: Write> {
    out: W,
    written: u64,
}

impl<W: Write> Tar<W> {
    fn new(out: W) -> Self {
        Self { out, written: 0 }
    }

    fn entry(&mut self, name: &str, mode: u32, owner: u32, kind: Kind, content: &[u8]) -> std::io::Result<()> {
        assert!(name.len() < 100, "tar names here are short: {name}");
        let mut header = [0u8; 512];
        header[..name.len()].copy_from_slice(name.as_bytes());
        let octal = |field: &mut [u8], value: u64| {
            let text = format!("{value:0width$o}", width = field.len() - 1);
            field[..text.len()].copy_from_slice(text.as_bytes());
        };
        octal(&mut header[100..108], u64::from(mode));
        octal(&mut header[108..116], u64::from(owner));
        octal(&mut header[116..124], u64::from(owner));
        octal(&mut header[124..136], content.len() as u64);
        octal(&mut header[136..148], 0);
        header[156] = match kind {
            Kind::File => b'0',
            Kind::Dir => b'5',
            Kind::Symlink(target) => {
                assert!(target.len() < 100, "link targets here are short: {target}");
                header[157..157 + target.len()].copy_from_slice(target.as_bytes());
                b'2'
            }
        };
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        let owner_name: &[u8] = if owner == NONROOT { b"nonroot" } else { b"root" };
        header[265..265 + owner_name.len()].copy_from_slice(owner_name);
        header[297..297 + owner_name.len()].copy_from_slice(owner_name);
        header[148..156].copy_from_slice(b"        ");
        let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
        let text = format!("{sum:06o}\0 ");
        header[148..156].copy_from_slice(text.as_bytes());
        self.write(&header)?;
        self.write(content)?;
        let padding = self.written.next_multiple_of(512) - self.written;
        self.write(&vec![0u8; padding as usize])
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn finish(mut self) -> std::io::Result<W> {
        self.write(&[0u8; 1024])?;
        self.out.flush()?;
        Ok(self.out)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("capssh-images-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// `tar -tv` of an archive, owners as numbers.
    fn tar_list(archive: &Path) -> String {
        let list = Command::new("tar").arg("--numeric-owner").arg("-tvf").arg(archive).output().unwrap();
        assert!(list.status.success(), "{}", String::from_utf8_lossy(&list.stderr));
        String::from_utf8_lossy(&list.stdout).to_string()
    }

    #[test]
    fn archives_are_tar_files_that_tar_reads() {
        let dir = scratch("read");
        let binary = dir.join("pause");
        std::fs::write(&binary, b"#!/bin/true\n").unwrap();
        let mut spec = ImageSpec::new(
            "registry.k8s.io/pause:3.10.2",
            RunConfig { user: None, env: vec![], entrypoint: vec!["/pause".into()], cmd: vec![], working_dir: "/".into() },
        );
        spec.file_from("pause", 0o755, &binary).unwrap();
        spec.dir("home/nonroot", 0o700, NONROOT);
        let archive = build_image(&spec, &dir).unwrap();
        let text = tar_list(&archive.path);
        assert!(text.contains("index.json") && text.contains("oci-layout") && text.matches("blobs/sha256/").count() == 4, "{text}");
        assert_eq!(archive_manifest_digest(&archive.path).unwrap(), archive.digest);
        let index: serde_json::Value = serde_json::from_slice(&read_member(&archive.path, "index.json").unwrap().unwrap()).unwrap();
        assert_eq!(index["manifests"][0]["annotations"]["io.containerd.image.name"], "registry.k8s.io/pause:3.10.2");
        assert_eq!(index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"], "3.10.2");
        // The layer: parents before children, the owner where it matters, root elsewhere.
        let manifest = read_member(&archive.path, &format!("blobs/sha256/{}", archive.digest.trim_start_matches("sha256:"))).unwrap().unwrap();
        let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
        let layer =
            read_member(&archive.path, &format!("blobs/sha256/{}", manifest["layers"][0]["digest"].as_str().unwrap().trim_start_matches("sha256:")))
                .unwrap()
                .unwrap();
        std::fs::write(dir.join("layer.tar"), layer).unwrap();
        let layer = tar_list(&dir.join("layer.tar"));
        let names: Vec<&str> = layer.lines().map(|l| l.rsplit(' ').next().unwrap()).collect();
        assert_eq!(names, ["home/", "home/nonroot/", "pause"], "{layer}");
        assert!(layer.lines().nth(1).unwrap().starts_with("drwx------ 65532/65532"), "{layer}");
        assert!(layer.lines().nth(2).unwrap().starts_with("-rwxr-xr-x 0/0"), "{layer}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_same_inputs_give_the_same_archive_written_once() {
        let dir = scratch("cache");
        let image = || capssh_image(&std::env::current_exe().unwrap()).unwrap();
        let first = build_image(&image(), &dir.join("a")).unwrap();
        let second = build_image(&image(), &dir.join("b")).unwrap();
        assert_eq!(std::fs::read(&first.path).unwrap(), std::fs::read(&second.path).unwrap());
        assert_eq!(first.path.file_name(), second.path.file_name());
        // A build with the same inputs finds the archive and leaves it alone.
        std::fs::write(&first.path, b"left alone").unwrap();
        let again = build_image(&image(), &dir.join("a")).unwrap();
        assert_eq!(again.path, first.path);
        assert_eq!(std::fs::read(&again.path).unwrap(), b"left alone");
        // Another input is another archive.
        let mut changed = image();
        changed.config.cmd = vec!["hosts".into()];
        let other = build_image(&changed, &dir.join("a")).unwrap();
        assert_ne!(other.path, first.path);
        assert_ne!(other.digest, first.digest);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The instructions of the Dockerfile's last stage: (instruction, arguments).
    fn final_stage(dockerfile: &str) -> Vec<(String, String)> {
        let stage = dockerfile.rsplit_once("\nFROM ").expect("the Dockerfile has a final FROM stage").1;
        stage
            .lines()
            .skip(1)
            .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .map(|l| l.split_once(' ').map(|(i, a)| (i.to_uppercase(), a.trim().to_string())).unwrap_or((l.to_uppercase(), String::new())))
            .collect()
    }

    #[test]
    fn the_capssh_image_runs_what_the_dockerfile_says() {
        let dockerfile = std::fs::read_to_string(repo_root().join("Dockerfile")).unwrap();
        let stage = final_stage(&dockerfile);
        let last = |instruction: &str| {
            stage
                .iter()
                .rev()
                .find(|(i, _)| i == instruction)
                .map(|(_, a)| a.clone())
                .unwrap_or_else(|| panic!("no {instruction} in the final stage"))
        };
        let copy = last("COPY");
        let copied_to = copy.rsplit(' ').next().unwrap();
        assert!(copy.split(' ').rev().nth(1).unwrap().ends_with("/release/capssh"), "the final stage copies the release binary: {copy}");
        let entrypoint: serde_json::Value = serde_json::from_str(&last("ENTRYPOINT")).expect("ENTRYPOINT in exec (JSON) form");
        let cmd: serde_json::Value = serde_json::from_str(&last("CMD")).expect("CMD in exec (JSON) form");

        // Any dynamically linked binary stands in for capssh: the test's own.
        let binary = std::env::current_exe().unwrap();
        let image = capssh_image(&binary).unwrap();
        let config: serde_json::Value = serde_json::from_slice(&image.config_blob(&"0".repeat(64)).unwrap()).unwrap();
        assert_eq!(config["config"]["User"], last("USER"));
        assert_eq!(config["config"]["Entrypoint"], entrypoint);
        assert_eq!(config["config"]["Cmd"], cmd);
        let content = image.file_content(copied_to.trim_start_matches('/'));
        assert!(content == Some(&std::fs::read(&binary).unwrap()[..]), "the image holds the binary where the Dockerfile copies it ({copied_to})");
    }

    #[test]
    fn the_capssh_image_carries_the_libraries_its_binary_links() {
        let binary = std::env::current_exe().unwrap();
        let libraries = linked_libraries(&binary).unwrap();
        assert!(libraries.iter().any(|l| l.file_name().unwrap() == "libc.so.6"), "{libraries:?}");
        assert!(libraries.iter().any(|l| l.to_str().unwrap().contains("ld-linux")), "{libraries:?}");
        let image = capssh_image(&binary).unwrap();
        for library in &libraries {
            let inside = library.to_str().unwrap().trim_start_matches('/');
            assert_eq!(image.file_content(inside), Some(&std::fs::read(library).unwrap()[..]), "{inside}");
        }
        // A static binary links nothing.
        assert_eq!(linked_libraries(&pause_binary().unwrap()).unwrap(), Vec::<PathBuf>::new());
    }

    #[test]
    fn relocation_keeps_the_path_and_replaces_the_registry() {
        assert_eq!(
            relocate("registry.k8s.io/cluster-api/cluster-api-controller:v1.14.2", "198.18.0.1:5000"),
            "198.18.0.1:5000/cluster-api/cluster-api-controller:v1.14.2"
        );
        assert_eq!(relocate("ghcr.io/capssh/capssh:v0.2.0", "mirror.example"), "mirror.example/capssh/capssh:v0.2.0");
        assert_eq!(relocate("localhost:5000/capssh:v1", "mirror.example"), "mirror.example/capssh:v1");
        assert_eq!(relocate("capssh/capssh:v1", "mirror.example"), "mirror.example/capssh/capssh:v1");
    }
}
