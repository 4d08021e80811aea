//! The images a workload cluster runs beyond its control plane, built like [`crate::images`]
//! (one deterministic layer, cached by content) from what hack/tools builds and this Debian
//! machine's packages:
//!
//! - `registry.k8s.io/kube-proxy:<version>`: kube-proxy at `/usr/local/bin/kube-proxy` (where
//!   kubeadm's DaemonSet calls it) with iptables (the nf_tables variant under every iptables
//!   name, as upstream's iptables-wrapper picks on a host without legacy rules) and its extensions;
//! - `registry.k8s.io/coredns/coredns:<kubeadm's tag>`: CoreDNS at `/coredns`, built at exactly
//!   the version kubeadm installs. It runs as root: upstream's image runs as 65532 with a file
//!   capability to bind port 53, and a layer written here carries no extended attributes;
//! - `docker.io/cloudnativelabs/kube-router:v2.1.0`: kube-router with iptables and ipset, and a
//!   static busybox as `/bin/sh` for the DaemonSet's step that installs the CNI configuration;
//! - `ghcr.io/kube-vip/kube-vip:v0.5.5`: kube-vip at `/kube-vip`, as upstream's image from scratch;
//! - `registry.k8s.io/e2e-test-images/agnhost:<its VERSION>`: Kubernetes' test server at
//!   `/agnhost` with the shell and network tools its upstream image carries ([`agnhost_image`]).

use crate::images::{CACHE, ImageArchive, ImageSpec, RunConfig, build_image, linked_libraries};
use crate::tools::repo_root;
use anyhow::Context;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The nf_tables iptables of Debian's `iptables` package; one binary that acts by its name.
const XTABLES: &str = "/usr/sbin/xtables-nft-multi";
/// The names kube-proxy and kube-router call iptables by.
const IPTABLES_NAMES: &[&str] = &["iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore"];
/// Where Debian's iptables loads its match and target extensions from (compiled in).
const XTABLES_EXTENSIONS: &str = "/usr/lib/x86_64-linux-gnu/xtables";
const IPSET: &str = "/usr/sbin/ipset";
/// Debian's `busybox-static`.
const BUSYBOX: &str = "/bin/busybox";
/// The busybox applets the image links (a shell and what its CNI install step runs). Not
/// `wget`: Debian 12's static busybox crashes in it (SIGSEGV, even on this machine itself).
const BUSYBOX_APPLETS: &[&str] = &["sh", "cat", "cp", "mv", "rm", "ls", "mkdir", "sleep"];

/// The kube-router version of hack/tools (its only version the Go proxy serves).
pub const KUBE_ROUTER_IMAGE: &str = "docker.io/cloudnativelabs/kube-router:v2.1.0";
/// The kube-vip version of hack/tools (its only version the Go proxy serves), the default
/// flavor's `KUBE_VIP_VERSION`.
pub const KUBE_VIP_IMAGE: &str = "ghcr.io/kube-vip/kube-vip:v0.5.5";

/// The add-on images of Kubernetes `versions` (kube-proxy of each, CoreDNS as the first one's
/// kubeadm names it), kube-router, kube-vip and agnhost.
pub fn addon_images(versions: &[&str]) -> anyhow::Result<Vec<ImageArchive>> {
    let mut images = Vec::new();
    for version in versions {
        images.push(build_image(&kube_proxy_image(version)?, Path::new(CACHE))?);
    }
    let first = versions.first().context("no Kubernetes version")?;
    images.push(coredns_image(&kubeadm_image(first, "coredns")?)?);
    images.push(build_image(&kube_router_image()?, Path::new(CACHE))?);
    images.push(kube_vip_image()?);
    images.push(build_image(&agnhost_image()?, Path::new(CACHE))?);
    Ok(images)
}

/// Builds the add-on images of `versions` and pushes each to `registry` under its own path (what a
/// mirror of its upstream registry serves); returns the references pushed.
pub fn serve_addons(registry: &crate::registry::Registry, versions: &[&str]) -> anyhow::Result<Vec<String>> {
    let mut pushed = Vec::new();
    for image in addon_images(versions)? {
        crate::images::push(&image, &crate::images::relocate(&image.reference, &registry.address), &registry.crane_env())?;
        pushed.push(image.reference);
    }
    Ok(pushed)
}

/// The reference `kubeadm config images list` gives for `name` at `version`.
pub fn kubeadm_image(version: &str, name: &str) -> anyhow::Result<String> {
    let kubeadm = tool_binary(&format!("kubeadm-{version}"))?;
    let out = std::process::Command::new(&kubeadm).args(["config", "images", "list", "--kubernetes-version", version]).output()?;
    anyhow::ensure!(out.status.success(), "kubeadm config images list: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)?
        .lines()
        .find(|l| l.rsplit_once('/').is_some_and(|(_, last)| last.split(':').next() == Some(name)))
        .map(str::to_string)
        .with_context(|| format!("kubeadm {version} lists no {name} image"))
}

pub fn kube_proxy_image(version: &str) -> anyhow::Result<ImageSpec> {
    let mut spec = ImageSpec::new(&format!("registry.k8s.io/kube-proxy:{version}"), root_config("/usr/local/bin/kube-proxy"));
    spec.dir("tmp", 0o1777, 0);
    spec.file_from("usr/local/bin/kube-proxy", 0o755, &tool_binary(&format!("kube-proxy-{version}"))?)?;
    netfilter_tools(&mut spec, false)?;
    Ok(spec)
}

/// CoreDNS at `/coredns`, tagged `reference` (what kubeadm asks for).
pub fn coredns_image(reference: &str) -> anyhow::Result<ImageArchive> {
    let tag = reference.rsplit_once(':').map(|(_, tag)| tag).context("a CoreDNS reference with a tag")?;
    let binary = tool_binary(&format!("coredns-{tag}"))
        .with_context(|| format!("kubeadm installs CoreDNS {tag}: hack/tools/coredns must pin github.com/coredns/coredns {tag}"))?;
    crate::images::build(reference, &binary, "coredns")
}

pub fn kube_router_image() -> anyhow::Result<ImageSpec> {
    let version = KUBE_ROUTER_IMAGE.rsplit_once(':').map(|(_, v)| v).unwrap_or_default();
    let mut spec = ImageSpec::new(KUBE_ROUTER_IMAGE, root_config("/usr/local/bin/kube-router"));
    spec.dir("tmp", 0o1777, 0);
    spec.file_from("usr/local/bin/kube-router", 0o755, &tool_binary(&format!("kube-router-{version}"))?)?;
    netfilter_tools(&mut spec, true)?;
    busybox(&mut spec, BUSYBOX_APPLETS)?;
    Ok(spec)
}

/// kube-vip as upstream's image has it (from scratch, `/kube-vip` as the entrypoint).
pub fn kube_vip_image() -> anyhow::Result<ImageArchive> {
    let version = KUBE_VIP_IMAGE.rsplit_once(':').map(|(_, v)| v).unwrap_or_default();
    crate::images::build(KUBE_VIP_IMAGE, &tool_binary(&format!("kube-vip-{version}"))?, "kube-vip")
}

/// agnhost as Kubernetes' own image carries it (its Dockerfile: alpine with bind-tools, curl,
/// netcat-openbsd, iproute2 and bash; users 1000 and group 50000; the porter's certificate;
/// `CMD ["pause"]`), from this Debian machine's packages: the e2e tests run shell commands in it
/// (`/bin/sh -c 'echo hostName | nc -v -t -w 2 …'`, curl, dig).
pub fn agnhost_image() -> anyhow::Result<ImageSpec> {
    let source = crate::tools::module_dir("k8s").join("test/images/agnhost");
    let mut config = root_config("/agnhost");
    config.cmd = vec!["pause".into()];
    let mut spec = ImageSpec::new(&agnhost_reference()?, config);
    spec.dir("tmp", 0o1777, 0);
    spec.dir("uploads", 0o755, 0);
    spec.file_from("agnhost", 0o755, &tool_binary("agnhost")?)?;
    spec.symlink("agnhost-2", "agnhost");
    for file in ["localhost.crt", "localhost.key"] {
        spec.file_from(file, 0o644, &source.join("porter").join(file))?;
    }
    let users = "root:x:0:0:root:/root:/bin/sh\nuser-defined-in-image:x:1000:1000::/home/user-defined-in-image:/bin/sh\n";
    spec.file("etc/passwd", 0o644, users.into());
    spec.file("etc/group", 0o644, "root:x:0:\nuser-defined-in-image:x:1000:\ngroup-defined-in-image:x:50000:user-defined-in-image\n".into());
    spec.file("etc/nsswitch.conf", 0o644, "hosts: files dns\nservices: files\n".into());
    spec.dir("home/user-defined-in-image", 0o755, 0);
    let mut loaded = Vec::new();
    for (inside, host) in AGNHOST_TOOLS {
        spec.file_from(inside, 0o755, Path::new(host)).with_context(|| format!("{host} (hack/install-deps.sh installs its package)"))?;
        loaded.push(PathBuf::from(host));
    }
    add_libraries(&mut spec, &loaded)?;
    busybox(&mut spec, AGNHOST_APPLETS)?;
    Ok(spec)
}

/// agnhost's reference, tagged with the VERSION of its source in the pinned Kubernetes module.
pub fn agnhost_reference() -> anyhow::Result<String> {
    let version_file = crate::tools::module_dir("k8s").join("test/images/agnhost/VERSION");
    let version = std::fs::read_to_string(version_file).context("agnhost's VERSION")?;
    Ok(format!("registry.k8s.io/e2e-test-images/agnhost:{}", version.trim()))
}

/// What the e2e tests call in agnhost's image besides agnhost: (path in the image, this
/// machine's file).
const AGNHOST_TOOLS: &[(&str, &str)] = &[
    ("bin/sh", "/usr/bin/dash"),
    ("bin/bash", "/usr/bin/bash"),
    ("usr/bin/curl", "/usr/bin/curl"),
    ("usr/bin/nc", "/usr/bin/nc.openbsd"),
    ("usr/bin/dig", "/usr/bin/dig"),
    ("usr/bin/nslookup", "/usr/bin/nslookup"),
    ("sbin/ip", "/usr/bin/ip"),
];

/// The small tools of the tests' shell commands, as busybox applets (not `wget`: see
/// [`BUSYBOX_APPLETS`]).
const AGNHOST_APPLETS: &[&str] = &[
    "cat", "sleep", "seq", "ls", "hostname", "grep", "sed", "awk", "head", "tail", "wc", "tr", "cut", "sort", "uniq", "env", "date", "mkdir", "rm",
    "cp", "mv", "touch", "test", "timeout", "id", "ps", "kill", "true", "false", "tee", "find", "xargs", "stat", "dd", "chmod", "ln", "nproc",
    "uname", "md5sum", "base64",
];

fn root_config(entrypoint: &str) -> RunConfig {
    RunConfig { user: None, env: vec![PATH_ENV.into()], entrypoint: vec![entrypoint.into()], cmd: vec![], working_dir: "/".into() }
}

/// `hack/tools/bin/<name>` (a versioned file or the link to the current one), resolved.
fn tool_binary(name: &str) -> anyhow::Result<PathBuf> {
    let path = repo_root().join("hack/tools/bin").join(name);
    std::fs::canonicalize(&path).with_context(|| format!("{} is missing: run make tools", path.display()))
}

/// iptables (nf_tables) under each of its names, its extensions, optionally ipset, and the
/// libraries they load.
fn netfilter_tools(spec: &mut ImageSpec, with_ipset: bool) -> anyhow::Result<()> {
    let mut loaded = vec![PathBuf::from(XTABLES)];
    spec.file_from("usr/sbin/xtables-nft-multi", 0o755, Path::new(XTABLES)).context("Debian's iptables package (hack/install-deps.sh)")?;
    for name in IPTABLES_NAMES {
        spec.symlink(&format!("usr/sbin/{name}"), "xtables-nft-multi");
    }
    for entry in std::fs::read_dir(XTABLES_EXTENSIONS).with_context(|| format!("reading {XTABLES_EXTENSIONS}"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "so") {
            let inside = inside(&path)?;
            spec.file_from(&inside, 0o644, &path)?;
            loaded.push(path);
        }
    }
    if with_ipset {
        spec.file_from("usr/sbin/ipset", 0o755, Path::new(IPSET)).context("Debian's ipset package (hack/install-deps.sh)")?;
        loaded.push(PathBuf::from(IPSET));
    }
    add_libraries(spec, &loaded)
}

/// The shared libraries (and loader) the `loaded` files of this machine link, at their paths.
fn add_libraries(spec: &mut ImageSpec, loaded: &[PathBuf]) -> anyhow::Result<()> {
    let mut libraries: Vec<PathBuf> = Vec::new();
    for binary in loaded {
        for library in linked_libraries(binary)? {
            if !libraries.contains(&library) {
                libraries.push(library);
            }
        }
    }
    for library in libraries {
        let mode = std::fs::metadata(&library)?.permissions().mode() & 0o777;
        spec.file_from(&inside(&library)?, mode, &library)?;
    }
    Ok(())
}

/// Debian's static busybox at `/bin/busybox`, linked as each of `applets`.
fn busybox(spec: &mut ImageSpec, applets: &[&str]) -> anyhow::Result<()> {
    spec.file_from("bin/busybox", 0o755, Path::new(BUSYBOX)).context("Debian's busybox-static package (hack/install-deps.sh)")?;
    for applet in applets {
        spec.symlink(&format!("bin/{applet}"), "busybox");
    }
    Ok(())
}

/// An absolute path of this machine as a path inside the layer.
fn inside(path: &Path) -> anyhow::Result<String> {
    path.strip_prefix("/")
        .ok()
        .and_then(Path::to_str)
        .map(str::to_string)
        .with_context(|| format!("{} is not an absolute UTF-8 path", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_netfilter_userland_carries_every_iptables_name_and_the_libraries_it_loads() {
        let mut spec = ImageSpec::new("example.invalid/netfilter:test", root_config("/usr/sbin/iptables"));
        netfilter_tools(&mut spec, true).unwrap();
        assert!(spec.file_content("usr/sbin/xtables-nft-multi").is_some());
        assert!(spec.file_content("usr/sbin/ipset").is_some());
        assert!(spec.file_content("usr/lib/x86_64-linux-gnu/xtables/libxt_comment.so").is_some(), "kube-proxy's rules carry comments");
        for library in linked_libraries(Path::new(XTABLES)).unwrap() {
            assert!(spec.file_content(&inside(&library).unwrap()).is_some(), "{} is missing", library.display());
        }
    }

    /// Runs `script` with the image's own `/bin/sh`, chrooted into its unpacked layer, in a
    /// network namespace of its own; stdout.
    fn run_in_image(spec: &ImageSpec, script: &str) -> String {
        let archive = build_image(spec, Path::new(CACHE)).unwrap();
        let dir = std::env::temp_dir().join(format!("capssh-image-run-{}-{}", std::process::id(), archive.digest.len() + script.len()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("rootfs")).unwrap();
        let sh = |script: &str| {
            let out = std::process::Command::new("sh").arg("-c").arg(script).current_dir(&dir).output().unwrap();
            assert!(out.status.success(), "{script}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).to_string()
        };
        let digest = crate::images::archive_manifest_digest(&archive.path).unwrap();
        sh(&format!(
            "tar -xf {} && tar -xf blobs/sha256/$(python3 -c \"import json;print(json.load(open('blobs/sha256/{}'))['layers'][0]['digest'][7:])\") -C rootfs",
            archive.path.display(),
            &digest[7..]
        ));
        let out = sh(&format!("unshare -n chroot rootfs /bin/sh -c '{script}'"));
        let _ = std::fs::remove_dir_all(&dir);
        out
    }

    /// kube-router's iptables, ipset and shell run from the image's own files: nothing is
    /// missing from the layer.
    #[test]
    fn the_kube_router_image_runs_its_netfilter_tools_and_shell_from_its_own_files() {
        let out = run_in_image(
            &kube_router_image().unwrap(),
            "iptables -t nat -N CAPSSH-TEST && iptables -t nat -A CAPSSH-TEST -m comment --comment proof -j RETURN && iptables-save -t nat && ipset create capssh-test hash:ip && ipset list -n",
        );
        assert!(out.contains("-A CAPSSH-TEST -m comment --comment proof -j RETURN") && out.contains("capssh-test"), "{out}");
    }

    /// The commands Kubernetes' e2e tests run in agnhost's image work from its own files.
    #[test]
    fn the_agnhost_image_runs_the_shell_commands_of_the_kubernetes_e2e_tests() {
        let out = run_in_image(
            &agnhost_image().unwrap(),
            "echo hostName | nc -v -t -w 1 127.0.0.1 1 || echo nc-refused; curl --version | head -n 1; dig -v 2>&1; echo lines=$(seq 1 2 | wc -l); /agnhost --help | grep netexec",
        );
        for expected in ["nc-refused", "curl ", "DiG ", "lines=2", "netexec"] {
            assert!(out.contains(expected), "{expected} missing from:\n{out}");
        }
    }
}
