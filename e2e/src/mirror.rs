//! An artifact mirror for preparation mode Artifacts, as a site would make one: the real
//! `capssh artifacts build` CLI over the Kubernetes binaries of hack/tools, containerd, runc and
//! the CNI plugins of Debian bookworm's packages (`apt-get download`, unpacked with `dpkg-deb
//! -x`, cached in [`DEBS`]), and the control-plane images of [`crate::images`]. [`MirrorServer`]
//! serves it over HTTP on an address the test hosts reach (the farm's gateway).

use crate::images::control_plane_images;
use crate::tools::{capssh, repo_root};
use anyhow::{Context, bail};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Where the Debian packages are downloaded and unpacked, between runs.
pub const DEBS: &str = "/var/lib/capssh-e2e/debs";
/// The packages the mirror takes containerd, runc and the CNI plugins from.
pub const PACKAGES: &[&str] = &["containerd", "runc", "containernetworking-plugins"];

/// A mirror folder; removed when dropped (it holds ~400 MB of copies).
pub struct MirrorFolder {
    /// Serve this folder: it holds `<version>/<arch>/`.
    pub root: PathBuf,
    pub version: String,
    pub arch: String,
    /// SHA-256 of `<version>/<arch>/SHA256SUMS`, as `capssh artifacts build` printed it.
    pub sums_sha256: String,
}

impl MirrorFolder {
    /// `<root>/<version>/<arch>`.
    pub fn folder(&self) -> PathBuf {
        self.root.join(&self.version).join(&self.arch)
    }
}

impl Drop for MirrorFolder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Builds the mirror of Kubernetes `version` for amd64 into `root` (made, or replaced).
pub fn build_mirror(root: &Path, version: &str) -> anyhow::Result<MirrorFolder> {
    let unpacked = debian_packages()?;
    let bin = repo_root().join("hack/tools/bin");
    let mut command = Command::new(capssh());
    command.args(["artifacts", "build", "--kubernetes-version", version, "--arch", "amd64", "--output"]).arg(root);
    for tool in ["kubeadm", "kubelet", "kubectl"] {
        let path = bin.join(format!("{tool}-{version}"));
        anyhow::ensure!(path.exists(), "{} is missing: run hack/tools/build.sh", path.display());
        command.arg("--bin").arg(format!("{tool}={}", path.display()));
    }
    command.arg("--bin-dir").arg(unpacked.join("usr/bin")).arg("--bin-dir").arg(unpacked.join("usr/sbin"));
    command.arg("--cni-dir").arg(unpacked.join("usr/lib/cni"));
    for image in control_plane_images(version)? {
        command.arg("--image").arg(&image.path);
    }
    let output = command.output().context("running capssh artifacts build")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(output.status.success(), "capssh artifacts build failed: {}{stdout}", String::from_utf8_lossy(&output.stderr));
    let sums_sha256 = stdout
        .lines()
        .find_map(|line| line.strip_prefix("SHA256SUMS:"))
        .map(|sum| sum.trim().to_string())
        .with_context(|| format!("capssh artifacts build printed no SHA256SUMS line:\n{stdout}"))?;
    Ok(MirrorFolder { root: root.to_path_buf(), version: version.to_string(), arch: "amd64".into(), sums_sha256 })
}

/// The [`PACKAGES`] unpacked into one folder (`usr/bin/containerd`, `usr/sbin/runc`,
/// `usr/lib/cni/*`): downloaded once, re-used after.
pub fn debian_packages() -> anyhow::Result<PathBuf> {
    let cache = Path::new(DEBS);
    let unpacked = cache.join("unpacked");
    let done = unpacked.join(".complete");
    if done.exists() {
        return Ok(unpacked);
    }
    std::fs::create_dir_all(cache)?;
    let download = || Command::new("apt-get").arg("download").args(PACKAGES).current_dir(cache).output();
    let mut output = download().context("running apt-get download")?;
    if !output.status.success() {
        // A fresh machine may have no package lists yet.
        let update = Command::new("apt-get").args(["update", "-qq"]).status().context("running apt-get update")?;
        anyhow::ensure!(update.success(), "apt-get update failed");
        output = download()?;
    }
    anyhow::ensure!(output.status.success(), "apt-get download {}: {}", PACKAGES.join(" "), String::from_utf8_lossy(&output.stderr));
    let _ = std::fs::remove_dir_all(&unpacked);
    std::fs::create_dir_all(&unpacked)?;
    for package in PACKAGES {
        let deb = newest_deb(cache, package)?;
        let status = Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked).status().context("running dpkg-deb")?;
        anyhow::ensure!(status.success(), "dpkg-deb -x {} failed", deb.display());
    }
    for needed in ["usr/bin/containerd", "usr/bin/containerd-shim-runc-v2", "usr/bin/ctr", "usr/sbin/runc", "usr/lib/cni/bridge"] {
        anyhow::ensure!(unpacked.join(needed).exists(), "the Debian packages hold no {needed}");
    }
    std::fs::write(&done, "")?;
    Ok(unpacked)
}

/// The last `<package>_*.deb` in `dir` by name (apt-get download names them by version).
fn newest_deb(dir: &Path, package: &str) -> anyhow::Result<PathBuf> {
    let prefix = format!("{package}_");
    let mut debs: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb")))
        .collect();
    debs.sort();
    debs.pop().with_context(|| format!("apt-get download left no {package}_*.deb in {}", dir.display()))
}

/// A static file server (HTTP/1.1 GET, one thread per connection, `Connection: close`) over a
/// folder, for the test hosts. It records every path asked for, so a test can tell what a host
/// downloaded. Stops when dropped.
pub struct MirrorServer {
    pub address: SocketAddr,
    stop: Arc<AtomicBool>,
    requests: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MirrorServer {
    /// Serves `root` on `address` (port 0 picks a free one).
    pub fn start(root: &Path, address: SocketAddr) -> anyhow::Result<MirrorServer> {
        let listener = TcpListener::bind(address).with_context(|| format!("binding {address}"))?;
        let address = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let root = root.to_path_buf();
        let thread = {
            let (stop, requests) = (stop.clone(), requests.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (root, requests) = (root.clone(), requests.clone());
                    std::thread::spawn(move || {
                        let _ = serve(stream, &root, &requests);
                    });
                }
            })
        };
        Ok(MirrorServer { address, stop, requests, thread: Some(thread) })
    }

    /// `http://<address>`, for spec.preparation.artifacts.url.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Every path asked for so far, in order (`GET` paths, e.g. `/v1.36.3/amd64/SHA256SUMS`).
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Drop for MirrorServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.address); // wakes accept()
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(stream: TcpStream, root: &Path, requests: &Mutex<Vec<String>>) -> anyhow::Result<()> {
    stream.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if let Ok(mut list) = requests.lock() {
        list.push(path.to_string());
    }
    let mut stream = stream;
    let file = match (method, local_path(root, path)) {
        ("GET", Some(local)) if local.is_file() => std::fs::File::open(&local).ok(),
        _ => None,
    };
    let Some(mut file) = file else {
        stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 10\r\nConnection: close\r\n\r\nnot found\n")?;
        return Ok(());
    };
    let length = file.metadata()?.len();
    write!(stream, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n")?;
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        stream.write_all(&buffer[..read])?;
    }
    Ok(())
}

/// The file under `root` a URL path names (percent-decoded: apt may send `core%3a`), or None if
/// the path leaves `root` or is odd.
fn local_path(root: &Path, url_path: &str) -> Option<PathBuf> {
    if url_path.contains(['?', '#']) {
        return None;
    }
    let decoded = percent_decode(url_path.strip_prefix('/')?)?;
    let relative = Path::new(&decoded);
    if decoded.is_empty() || relative.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    Some(root.join(relative))
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = capssh::bootstrap::percent_decode(text)?;
    String::from_utf8(bytes).ok().filter(|s| !s.contains('\0'))
}

/// Checks that a test mirror is usable here before a suite relies on it.
pub fn ensure_tools() -> anyhow::Result<()> {
    for tool in ["apt-get", "dpkg-deb", "gcc"] {
        if Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output()?.status.success() {
            continue;
        }
        bail!("{tool} is needed to build the test mirror (hack/install-deps.sh installs it)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_never_leave_the_folder() {
        let root = Path::new("/srv/m");
        assert_eq!(local_path(root, "/v1.36.3/amd64/SHA256SUMS"), Some(root.join("v1.36.3/amd64/SHA256SUMS")));
        assert_eq!(local_path(root, "/core%3a/stable:/v1.36/deb/InRelease"), Some(root.join("core:/stable:/v1.36/deb/InRelease")));
        for bad in ["/../etc/passwd", "/a/../../b", "relative", "/a/%2e%2e/b", "/a?x", "/a/%zz", "/"] {
            assert_eq!(local_path(root, bad), None, "{bad}");
        }
    }

    #[test]
    fn the_server_serves_files_and_records_requests() {
        let dir = std::env::temp_dir().join(format!("capssh-mirror-serve-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("v1/amd64")).unwrap();
        std::fs::write(dir.join("v1/amd64/SHA256SUMS"), "hello").unwrap();
        let server = MirrorServer::start(&dir, "127.0.0.1:0".parse().unwrap()).unwrap();
        let get = |path: &str| {
            let mut stream = TcpStream::connect(server.address).unwrap();
            write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).unwrap();
            response
        };
        assert!(get("/v1/amd64/SHA256SUMS").ends_with("\r\n\r\nhello"));
        assert!(get("/v1/amd64/missing").starts_with("HTTP/1.1 404"));
        assert_eq!(server.requests(), ["/v1/amd64/SHA256SUMS", "/v1/amd64/missing"]);
        drop(server);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
