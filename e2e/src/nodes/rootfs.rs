//! The base root file system every node boots from (read-only, shared; each node writes to its
//! own overlay). Built once with debootstrap and cached by the content of its recipe.

use anyhow::{Context, bail};
use sha2::Digest as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const SUITE: &str = "bookworm";
const MIRROR: &str = "http://deb.debian.org/debian";
const ROOTFS_ROOT: &str = "/var/lib/capssh-e2e/rootfs";

/// What a bare Debian server has, plus what Kubernetes needs from the OS (iptables, conntrack,
/// ethtool, socat, libseccomp for runc) and curl for capssh's artifact downloads. No container
/// runtime and no Kubernetes: host preparation installs those.
const PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "iproute2",
    "curl",
    "ca-certificates",
    "iptables",
    "conntrack",
    "ethtool",
    "socat",
    "libseccomp2",
    "procps",
    "kmod",
    "util-linux",
    "mount",
    "less",
];

/// Units that must not run inside a node: udev would act on this machine's devices, gettys and
/// time sync on its consoles and clock.
const MASKED_UNITS: &[&str] = &[
    "systemd-udevd.service",
    "systemd-udevd-kernel.socket",
    "systemd-udevd-control.socket",
    "systemd-udev-trigger.service",
    "getty@tty1.service",
    "console-getty.service",
    "systemd-timesyncd.service",
    "systemd-networkd.service",
    "systemd-resolved.service",
];

/// Bumped when the customisation below changes (part of the cache key).
const RECIPE_VERSION: &str = "1";

/// The path of the cached base rootfs, building it first if needed (about 80 s; one builder at a
/// time, guarded by a lock file).
pub fn base_rootfs() -> anyhow::Result<PathBuf> {
    let mut hasher = sha2::Sha256::new();
    hasher.update(format!("{SUITE} {MIRROR} {RECIPE_VERSION} {PACKAGES:?} {MASKED_UNITS:?}"));
    let key: String = hasher.finalize().iter().take(6).map(|b| format!("{b:02x}")).collect();
    let root = Path::new(ROOTFS_ROOT);
    fs::create_dir_all(root)?;
    let target = root.join(format!("{SUITE}-{key}"));
    let _lock = crate::hosts::lock_wait(&root.join(".lock"))?;
    if target.join("etc/os-release").exists() {
        return Ok(target);
    }
    let staging = root.join(format!(".{SUITE}-{key}.building"));
    let _ = fs::remove_dir_all(&staging);
    let log = root.join(format!("{SUITE}-{key}.log"));
    eprintln!("building the node base rootfs with debootstrap (once; log {})", log.display());
    let started = std::time::Instant::now();
    let status = Command::new("debootstrap")
        .arg("--variant=minbase")
        .arg(format!("--include={}", PACKAGES.join(",")))
        .args([SUITE, &staging.to_string_lossy(), MIRROR])
        .stdin(Stdio::null())
        .stdout(fs::File::create(&log)?)
        .stderr(fs::File::options().append(true).open(&log)?)
        .status()
        .context("running debootstrap (apt-get install debootstrap)")?;
    if !status.success() {
        bail!("debootstrap failed ({status}); see {}", log.display());
    }
    customise(&staging)?;
    fs::rename(&staging, &target)?;
    eprintln!("node base rootfs ready in {:.0}s: {}", started.elapsed().as_secs_f64(), target.display());
    Ok(target)
}

fn customise(root: &Path) -> anyhow::Result<()> {
    for unit in MASKED_UNITS {
        let link = root.join("etc/systemd/system").join(unit);
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink("/dev/null", &link)?;
    }
    // Every node makes its own host keys and machine id.
    for entry in fs::read_dir(root.join("etc/ssh"))? {
        let path = entry?.path();
        if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("ssh_host_")) {
            fs::remove_file(path)?;
        }
    }
    fs::write(root.join("etc/machine-id"), "")?;
    // debootstrap copies this machine's resolver; nodes must not send DNS anywhere (network rule).
    fs::write(root.join("etc/resolv.conf"), "# no DNS on the capssh e2e test network\n")?;
    fs::write(root.join("etc/apt/sources.list"), "# no package mirror on the capssh e2e test network\n")?;
    // Journald in memory only: node logs are collected by the harness, not kept on disk.
    fs::create_dir_all(root.join("etc/systemd/journald.conf.d"))?;
    fs::write(root.join("etc/systemd/journald.conf.d/volatile.conf"), "[Journal]\nStorage=volatile\nRuntimeMaxUse=64M\n")?;
    Ok(())
}
