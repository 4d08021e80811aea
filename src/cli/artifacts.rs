//! `capssh artifacts build`: a mirror folder for preparation mode Artifacts, from binaries the
//! user has (for air-gapped sites). Layout, per Kubernetes version and architecture:
//!
//! ```text
//! <output>/<version>/<arch>/SHA256SUMS     sha256sum format, paths relative to this folder
//! <output>/<version>/<arch>/bin/           kubeadm kubelet kubectl containerd
//!                                          containerd-shim-runc-v2 ctr runc [crictl]
//! <output>/<version>/<arch>/cni/           CNI plugins (at least one)
//! <output>/<version>/<arch>/images/*.tar   image archives imported with `ctr -n k8s.io images import`
//! ```
//!
//! Serve `<output>` over HTTP(S) and set spec.preparation.artifacts.url to its URL.

use crate::bootstrap::prepare::{ARCHITECTURES, check_version};
use clap::Args;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Binaries every mirror holds, under bin/.
pub const REQUIRED_BINARIES: &[&str] = &["kubeadm", "kubelet", "kubectl", "containerd", "containerd-shim-runc-v2", "ctr", "runc"];
/// Binaries a mirror may hold.
pub const OPTIONAL_BINARIES: &[&str] = &["crictl"];

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Kubernetes version of the mirror folder, e.g. v1.36.3 (the Machines' spec.version).
    #[arg(long)]
    pub kubernetes_version: String,
    /// Architecture, as Kubernetes names it: amd64, arm64, ppc64le or s390x.
    #[arg(long, default_value = "amd64")]
    pub arch: String,
    /// The mirror folder; this writes <output>/<version>/<arch>/, replacing what was there.
    #[arg(long)]
    pub output: PathBuf,
    /// A folder holding binaries under their own names (kubeadm, kubelet, kubectl, containerd,
    /// containerd-shim-runc-v2, ctr, runc, crictl). Repeatable; searched in order.
    #[arg(long = "bin-dir")]
    pub bin_dirs: Vec<PathBuf>,
    /// One binary by path, NAME=PATH (e.g. kubelet=./kubelet-v1.36.3); wins over --bin-dir.
    #[arg(long = "bin", value_parser = parse_binary)]
    pub bins: Vec<(String, PathBuf)>,
    /// The folder of CNI plugins: every regular file in it goes to cni/.
    #[arg(long)]
    pub cni_dir: PathBuf,
    /// An image archive (OCI or docker-archive tar) that hosts import before the bootstrap.
    /// Repeatable.
    #[arg(long = "image")]
    pub images: Vec<PathBuf>,
}

fn parse_binary(text: &str) -> Result<(String, PathBuf), String> {
    let (name, path) = text.split_once('=').ok_or_else(|| format!("{text:?} is not NAME=PATH"))?;
    if !REQUIRED_BINARIES.contains(&name) && !OPTIONAL_BINARIES.contains(&name) {
        return Err(format!("{name} is not a mirror binary (known: {}, {})", REQUIRED_BINARIES.join(", "), OPTIONAL_BINARIES.join(", ")));
    }
    Ok((name.to_string(), PathBuf::from(path)))
}

/// Why a mirror folder cannot be built.
#[derive(thiserror::Error, Debug)]
pub enum ArtifactsError {
    #[error("{0}")]
    Invalid(String),
    #[error("{binary} was not found: give --bin {binary}=PATH or a --bin-dir that holds it")]
    MissingBinary { binary: String },
    #[error("{path} is not {what}")]
    WrongFile { path: String, what: String },
    #[error("{path} reports version {seen:?}, not {expected}")]
    WrongVersion { path: String, seen: String, expected: String },
    #[error("{what} {path}: {source}")]
    Io { what: &'static str, path: String, source: std::io::Error },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ArtifactsError + use<> {
    let path = path.display().to_string();
    move |source| ArtifactsError::Io { what, path, source }
}

/// What was built.
#[derive(Debug)]
pub struct Built {
    /// `<output>/<version>/<arch>`.
    pub folder: PathBuf,
    /// SHA-256 of its SHA256SUMS: the value for spec.preparation.artifacts.checksumsSHA256.
    pub sums_sha256: String,
    pub files: usize,
    pub bytes: u64,
}

pub fn run(args: &BuildArgs) -> Result<(), ArtifactsError> {
    let built = build(args)?;
    println!("mirror folder:  {} ({} files, {} MiB)", built.folder.display(), built.files, built.bytes / (1024 * 1024));
    println!("SHA256SUMS:     {}", built.sums_sha256);
    println!("\nServe {} over HTTP(S) and prepare hosts with:\n", args.output.display());
    println!("  preparation:\n    mode: Artifacts\n    artifacts:\n      url: https://<server>/<where it serves {}>", args.output.display());
    println!("      checksumsSHA256: {}   # pins this version and architecture only", built.sums_sha256);
    Ok(())
}

/// Builds the folder: checks every input (architecture, versions), copies it into a fresh
/// folder beside the target, writes SHA256SUMS, then swaps the folder into place.
pub fn build(args: &BuildArgs) -> Result<Built, ArtifactsError> {
    let version = check_version(Some(&args.kubernetes_version)).map_err(|e| ArtifactsError::Invalid(e.to_string()))?;
    if !ARCHITECTURES.contains(&args.arch.as_str()) {
        return Err(ArtifactsError::Invalid(format!("--arch {} is not one of {}", args.arch, ARCHITECTURES.join(", "))));
    }
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for name in REQUIRED_BINARIES.iter().chain(OPTIONAL_BINARIES) {
        match find_binary(args, name) {
            Some(path) => files.push((format!("bin/{name}"), path)),
            None if OPTIONAL_BINARIES.contains(name) => {}
            None => return Err(ArtifactsError::MissingBinary { binary: name.to_string() }),
        }
    }
    let mut plugins: Vec<PathBuf> = std::fs::read_dir(&args.cni_dir)
        .map_err(io("reading", &args.cni_dir))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.is_file())
        .collect();
    plugins.sort();
    if plugins.is_empty() {
        return Err(ArtifactsError::Invalid(format!("{} holds no CNI plugin", args.cni_dir.display())));
    }
    for path in &plugins {
        files.push((format!("cni/{}", file_name(path)?), path.clone()));
    }
    for (_, path) in &files {
        check_elf(path, &args.arch)?;
    }
    for path in &args.images {
        check_tar(path)?;
        files.push((format!("images/{}", file_name(path)?), path.clone()));
    }
    if same_arch_as_this_machine(&args.arch) {
        for (name, path) in &files {
            if let Some(tool) = name.strip_prefix("bin/").filter(|t| ["kubeadm", "kubelet", "kubectl"].contains(t)) {
                check_version_of(tool, path, version)?;
            }
        }
    }

    let parent = args.output.join(version);
    std::fs::create_dir_all(&parent).map_err(io("creating", &parent))?;
    let folder = parent.join(&args.arch);
    let staging = parent.join(format!(".{}.partial-{}", args.arch, std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let mut sums = String::new();
    let mut bytes = 0;
    files.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, source) in &files {
        let dest = staging.join(name);
        std::fs::create_dir_all(dest.parent().unwrap_or(&staging)).map_err(io("creating", &dest))?;
        bytes += std::fs::copy(source, &dest).map_err(io("copying", source))?;
        set_mode(&dest, if name.starts_with("images/") { 0o644 } else { 0o755 })?;
        sums.push_str(&format!("{}  {name}\n", sha256_file(&dest)?));
    }
    let sums_path = staging.join("SHA256SUMS");
    std::fs::write(&sums_path, &sums).map_err(io("writing", &sums_path))?;
    if folder.exists() {
        std::fs::remove_dir_all(&folder).map_err(io("removing the old", &folder))?;
    }
    std::fs::rename(&staging, &folder).map_err(io("moving into place", &folder))?;
    Ok(Built { sums_sha256: hex(&Sha256::digest(sums.as_bytes())), folder, files: files.len(), bytes })
}

fn find_binary(args: &BuildArgs, name: &str) -> Option<PathBuf> {
    if let Some((_, path)) = args.bins.iter().rev().find(|(n, _)| n == name) {
        return Some(path.clone());
    }
    args.bin_dirs.iter().map(|dir| dir.join(name)).find(|path| path.is_file())
}

/// A file name hosts accept (artifacts.sh checks the same): no leading dot, [A-Za-z0-9._+-].
fn file_name(path: &Path) -> Result<String, ArtifactsError> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let valid = !name.is_empty() && !name.starts_with('.') && name.chars().all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c));
    if valid {
        Ok(name.to_string())
    } else {
        Err(ArtifactsError::WrongFile { path: path.display().to_string(), what: "named with only A-Z a-z 0-9 . _ + - (and no leading dot)".into() })
    }
}

/// ELF's e_machine for each architecture.
fn elf_machine(arch: &str) -> u16 {
    match arch {
        "amd64" => 62,
        "arm64" => 183,
        "ppc64le" => 21,
        "s390x" => 22,
        _ => 0,
    }
}

/// The file is an ELF executable for `arch` (a binary of another architecture is the classic
/// air-gap mistake, found here rather than on a host).
fn check_elf(path: &Path, arch: &str) -> Result<(), ArtifactsError> {
    let mut header = [0u8; 20];
    let read = std::fs::File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut header));
    let wrong = |what: String| ArtifactsError::WrongFile { path: path.display().to_string(), what };
    if read.is_err() || &header[..4] != b"\x7fELF" {
        return Err(wrong("an ELF executable".into()));
    }
    let machine = if header[5] == 2 { u16::from_be_bytes([header[18], header[19]]) } else { u16::from_le_bytes([header[18], header[19]]) };
    if machine != elf_machine(arch) {
        return Err(wrong(format!("built for {arch} (its ELF machine is {machine}, {arch} is {})", elf_machine(arch))));
    }
    Ok(())
}

fn check_tar(path: &Path) -> Result<(), ArtifactsError> {
    let mut header = [0u8; 262];
    let read = std::fs::File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut header));
    if read.is_err() || &header[257..262] != b"ustar" {
        return Err(ArtifactsError::WrongFile { path: path.display().to_string(), what: "a tar archive (an OCI or docker image archive)".into() });
    }
    Ok(())
}

fn same_arch_as_this_machine(arch: &str) -> bool {
    matches!((std::env::consts::ARCH, arch), ("x86_64", "amd64") | ("aarch64", "arm64") | ("powerpc64", "ppc64le") | ("s390x", "s390x"))
}

/// kubeadm, kubelet and kubectl must say they are the mirror's version.
fn check_version_of(tool: &str, path: &Path, expected: &str) -> Result<(), ArtifactsError> {
    let args: &[&str] = match tool {
        "kubelet" => &["--version"],
        "kubeadm" => &["version", "-o", "short"],
        _ => &["version", "--client"],
    };
    let output = std::process::Command::new(path).args(args).output().map_err(io("running", path))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let seen = text
        .lines()
        .find_map(|line| {
            line.strip_prefix("Kubernetes ").or_else(|| line.strip_prefix("Client Version: ")).or_else(|| line.starts_with('v').then_some(line))
        })
        .unwrap_or("")
        .trim()
        .to_string();
    let matches = seen.strip_prefix(expected).is_some_and(|rest| rest.is_empty() || rest.starts_with(['-', '+']));
    if matches { Ok(()) } else { Err(ArtifactsError::WrongVersion { path: path.display().to_string(), seen, expected: expected.to_string() }) }
}

fn set_mode(path: &Path, mode: u32) -> Result<(), ArtifactsError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io("setting the mode of", path))
}

pub fn sha256_file(path: &Path) -> Result<String, ArtifactsError> {
    let mut file = std::fs::File::open(path).map_err(io("reading", path))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = std::io::Read::read(&mut file, &mut buffer).map_err(io("reading", path))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("capssh-artifacts-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A fake ELF for amd64 (enough for the header check) that cannot run.
    fn fake_elf(path: &Path) {
        let mut bytes = b"\x7fELF\x02\x01\x01".to_vec();
        bytes.resize(18, 0);
        bytes.extend_from_slice(&62u16.to_le_bytes());
        bytes.extend_from_slice(&[0; 40]);
        std::fs::write(path, bytes).unwrap();
    }

    fn args(dir: &Path) -> BuildArgs {
        let bins = dir.join("bins");
        let cni = dir.join("cni");
        std::fs::create_dir_all(&bins).unwrap();
        std::fs::create_dir_all(&cni).unwrap();
        for name in REQUIRED_BINARIES {
            fake_elf(&bins.join(name));
        }
        fake_elf(&cni.join("bridge"));
        fake_elf(&cni.join("loopback"));
        BuildArgs {
            kubernetes_version: "v1.36.3".into(),
            arch: "arm64".into(), // not this machine's: versions are not run
            output: dir.join("mirror"),
            bin_dirs: vec![bins],
            bins: vec![],
            cni_dir: cni,
            images: vec![],
        }
    }

    #[test]
    fn a_binary_of_another_architecture_is_refused() {
        let dir = scratch("arch");
        let err = build(&args(&dir)).unwrap_err();
        assert!(err.to_string().contains("built for arm64"), "{err}");
    }

    #[test]
    fn the_folder_holds_the_layout_and_its_sums() {
        let dir = scratch("layout");
        let mut args = args(&dir);
        for name in REQUIRED_BINARIES {
            // ELF headers for arm64, so the architecture check passes.
            let path = dir.join("bins").join(name);
            let mut bytes = std::fs::read(&path).unwrap();
            bytes[18..20].copy_from_slice(&183u16.to_le_bytes());
            std::fs::write(&path, bytes).unwrap();
        }
        for name in ["bridge", "loopback"] {
            let path = dir.join("cni").join(name);
            let mut bytes = std::fs::read(&path).unwrap();
            bytes[18..20].copy_from_slice(&183u16.to_le_bytes());
            std::fs::write(&path, bytes).unwrap();
        }
        let mut image = vec![0u8; 1024];
        image[257..262].copy_from_slice(b"ustar");
        std::fs::write(dir.join("pause.tar"), image).unwrap();
        args.images.push(dir.join("pause.tar"));
        let built = build(&args).unwrap();
        assert_eq!(built.folder, dir.join("mirror/v1.36.3/arm64"));
        let sums = std::fs::read_to_string(built.folder.join("SHA256SUMS")).unwrap();
        let names: Vec<&str> = sums.lines().map(|l| l.split_once("  ").unwrap().1).collect();
        assert_eq!(
            names,
            [
                "bin/containerd",
                "bin/containerd-shim-runc-v2",
                "bin/ctr",
                "bin/kubeadm",
                "bin/kubectl",
                "bin/kubelet",
                "bin/runc",
                "cni/bridge",
                "cni/loopback",
                "images/pause.tar"
            ]
        );
        for line in sums.lines() {
            let (sum, name) = line.split_once("  ").unwrap();
            assert_eq!(sha256_file(&built.folder.join(name)).unwrap(), sum);
        }
        assert_eq!(built.sums_sha256, sha256_file(&built.folder.join("SHA256SUMS")).unwrap());
        // Building again replaces the folder whole.
        std::fs::remove_file(dir.join("cni/loopback")).unwrap();
        build(&args).unwrap();
        assert!(!built.folder.join("cni/loopback").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_missing_binary_is_named() {
        let dir = scratch("missing");
        let args = args(&dir);
        std::fs::remove_file(dir.join("bins/runc")).unwrap();
        let err = build(&args).unwrap_err();
        assert!(err.to_string().starts_with("runc was not found"), "{err}");
    }
}
