//! Real Debian servers that can run kubeadm: systemd as PID 1, sshd, and (after capssh prepares
//! them) containerd running real containers. One per network namespace, on this machine.
//!
//! # What a node is
//!
//! - **Root file system**: an overlay of the shared base ([`rootfs::base_rootfs`]: debootstrap
//!   bookworm minbase + systemd, openssh-server, curl, iptables...; no container runtime, no
//!   Kubernetes) with the node's own upper layer. `/var/lib/containerd` is a plain directory (bind
//!   mount), because containerd's overlay snapshotter cannot stack on overlayfs.
//! - **Namespaces**: its own PID, mount, UTS, IPC and cgroup namespaces, joined to a network
//!   namespace made for it; systemd runs as PID 1 with `container=other` (see `boot.sh`).
//! - **cgroups**: this machine runs cgroup v1. Each node gets a subtree `capssh-node-<n>` in every
//!   hierarchy, mounted read-write inside its cgroup namespace, so containerd and the kubelet
//!   make their cgroups there (systemd-nspawn mounts them read-only: containers cannot start).
//! - **Network**: every node's `eth0` is a veth on one bridge in the root namespace,
//!   [`BRIDGE`] with [`GATEWAY`] (198.18.0.129/25): nodes reach each other at layer 2 (etcd peers,
//!   kubelets) and the root namespace (the management side, the artifact mirror) through the
//!   gateway, which is also their default route. This machine does not forward, so nothing leaves.
//!   Node `i` is 198.18.0.131 + i. [`ENDPOINT`] (198.18.0.130) is kept for the control-plane
//!   endpoint ([`balancer::Balancer`]). The veth is made after systemd has booted: one made
//!   before was seen to vanish during boot.
//! - **Access**: root logs in with the farm's ed25519 client key; each node has its own host key.
//! - **Reboots** ([`NodeFarm::reboot`]): PID 1 is killed, and with it every process of the node;
//!   the next boot gets a fresh `/run` and `/tmp`, a boot id of its own (mounted over
//!   `/proc/sys/kernel/random/boot_id`, which is otherwise this machine's), and the same disk and
//!   host key. Its veth vanishes during the boot and is made again, with the node's fixed MAC.
//!
//! # Things this machine lacks, and what the harness does about them
//!
//! - No process here holds CAP_SYS_RESOURCE, so nothing can lower an `oom_score_adj` below 0;
//!   runc fails to start pod sandboxes (containerd asks for -998) unless containerd's
//!   `restrict_oom_score_adj` is on. Host preparation detects this and turns it on.
//! - cgroup v1: the kubelet needs `failCgroupV1: false` and kubeadm's SystemVerification
//!   preflight check must be skipped (the e2e cluster template does both).
//! - Kernel modules are built in and there is no `modprobe` module tree.
//! - The kubelet sets `kernel.panic`, `kernel.panic_on_oops` and `vm.overcommit_memory`, which are
//!   not namespaced: the farm restores this machine's values when it is dropped.
//!
//! Only one node farm runs on the machine at a time (a lock file): the addresses are fixed.

pub mod balancer;
pub mod rootfs;

use crate::hosts::ClientKey;
use crate::process::Daemon;
use crate::tools::artifacts_dir;
use anyhow::{Context, bail};
use std::fs::{self, File};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The bridge all nodes hang on, in the root namespace.
pub const BRIDGE: &str = "capsshnodes";
/// The root namespace's address on the bridge: the nodes' default route and how they reach the
/// management side.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 129);
/// Reserved for the workload cluster's control-plane endpoint (see [`balancer`]).
pub const ENDPOINT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 130);
/// A free address on the node network for a control-plane VIP that the nodes hold themselves
/// (kube-vip, the default flavor): above every node's address.
pub const VIRTUAL_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 254);
const FIRST_NODE: u8 = 131;
const MAX_NODES: usize = 60;
const PREFIX_LEN: u8 = 25;
const STATE_ROOT: &str = "/var/lib/capssh-e2e/nodes";
const LOCK: &str = "/run/capssh-e2e/nodes.lock";
const NETNS_PREFIX: &str = "capssh-node-";
const VETH_PREFIX: &str = "capsshn";
const CGROUP_PREFIX: &str = "capssh-node-";
const BOOT_SCRIPT: &str = include_str!("boot.sh");
/// Global (not namespaced) sysctls a kubelet changes; restored when the farm is dropped.
const KERNEL_SYSCTLS: &[&str] = &["kernel/panic", "kernel/panic_on_oops", "vm/overcommit_memory", CONNTRACK_MAX, INOTIFY_INSTANCES, INOTIFY_WATCHES];
/// inotify's limits count per user, and every node's root is this machine's root: each node's
/// systemd, containerd (its CRI plugin watches the CNI folder and fails to load without an
/// instance left) and kubelet take from one budget, whose default (128 instances) a dozen nodes
/// exhaust. The farm raises both to what kind advises for the same reason (at least).
const INOTIFY_INSTANCES: &str = "fs/inotify/max_user_instances";
const INOTIFY_WATCHES: &str = "fs/inotify/max_user_watches";
const INOTIFY_LIMITS: [(&str, u64); 2] = [(INOTIFY_INSTANCES, 8192), (INOTIFY_WATCHES, 524_288)];
/// The conntrack table size: one value for the whole kernel, read-only inside a network
/// namespace. kube-proxy sets it at start unless it already holds what kube-proxy wants, and a
/// failed write stops kube-proxy; so the farm sets that value ([`kube_proxy_conntrack_max`]).
/// On a real host kube-proxy sets it itself.
const CONNTRACK_MAX: &str = "net/netfilter/nf_conntrack_max";

/// One booted node.
pub struct Node {
    /// `node-<i>`: its hostname, and its Kubernetes node name once it joins.
    pub name: String,
    pub address: Ipv4Addr,
    /// `ssh-ed25519 AAAA...`
    pub host_key_public: String,
    /// Its state folder (upper layer, containerd's state, boot log).
    pub dir: PathBuf,
    pub netns: String,
    veth: String,
    cgroup: String,
    /// `boot.sh outer`, alive while the node runs; replaced at each reboot.
    boot: Mutex<Option<Daemon>>,
}

impl Node {
    /// The node's PID 1 (systemd) as this machine sees it.
    pub fn init_pid(&self) -> anyhow::Result<u32> {
        init_pid_in(&self.netns)?.with_context(|| format!("{} is not running", self.name))
    }

    fn boot_slot(&self) -> std::sync::MutexGuard<'_, Option<Daemon>> {
        self.boot.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The nf_conntrack_max kube-proxy's default configuration asks for on a machine with `cpus`
/// CPUs (32768 per CPU, at least 131072, at most 1048576).
pub fn kube_proxy_conntrack_max(cpus: usize) -> usize {
    (32768 * cpus).clamp(131072, 1048576)
}

/// A set of nodes; dropping it stops and removes them.
pub struct NodeFarm {
    pub nodes: Vec<Node>,
    /// Root may log in to every node with this key.
    pub client_key: ClientKey,
    pub gateway: Ipv4Addr,
    /// Where node logs are collected (kept after the farm).
    pub logs: PathBuf,
    kernel_sysctls: Vec<(String, String)>,
    _lock: File,
}

impl NodeFarm {
    /// Boots `count` nodes (the first run also builds the base rootfs).
    pub fn start(suite: &str, count: usize) -> anyhow::Result<NodeFarm> {
        if count > MAX_NODES {
            bail!("at most {MAX_NODES} nodes");
        }
        let started = Instant::now();
        fs::create_dir_all(Path::new(LOCK).parent().expect("lock dir"))?;
        let lock = crate::hosts::lock_wait(Path::new(LOCK))?;
        remove_leftovers()?;
        let base = rootfs::base_rootfs()?;
        let logs = artifacts_dir(suite).join("nodes");
        fs::create_dir_all(&logs)?;
        let state = Path::new(STATE_ROOT);
        fs::create_dir_all(state)?;
        let client_key = make_client_key(&state.join("client"))?;
        let kernel_sysctls = KERNEL_SYSCTLS
            .iter()
            .map(|k| Ok((k.to_string(), fs::read_to_string(Path::new("/proc/sys").join(k))?.trim().to_string())))
            .collect::<anyhow::Result<_>>()?;
        let mut farm = NodeFarm { nodes: Vec::new(), client_key, gateway: GATEWAY, logs, kernel_sysctls, _lock: lock };
        let cpus = fs::read_to_string("/proc/cpuinfo")?.lines().filter(|l| l.starts_with("processor")).count();
        fs::write(Path::new("/proc/sys").join(CONNTRACK_MAX), kube_proxy_conntrack_max(cpus).to_string()).context("setting nf_conntrack_max")?;
        for (key, least) in INOTIFY_LIMITS {
            let path = Path::new("/proc/sys").join(key);
            let now: u64 = fs::read_to_string(&path)?.trim().parse().with_context(|| format!("reading {key}"))?;
            if now < least {
                fs::write(&path, least.to_string()).with_context(|| format!("setting {key}"))?;
            }
        }
        farm.create_bridge()?;
        for i in 0..count {
            let node = farm.prepare_node(&base, i)?;
            farm.nodes.push(node);
        }
        for i in 0..count {
            farm.boot(i)?;
        }
        for i in 0..count {
            if let Err(err) = farm.wait_booted(i) {
                // Seen rarely: a unit failing to attach to its fresh cgroup during boot. One reboot.
                eprintln!("{err:#}; booting {} again", farm.nodes[i].name);
                farm.power_cycle(i)?;
                farm.wait_booted(i)?;
            }
            farm.plug(i)?;
        }
        for node in &farm.nodes {
            wait_port(SocketAddr::from((node.address, 22)), Duration::from_secs(30)).with_context(|| format!("sshd on {}", node.name))?;
        }
        eprintln!("node farm: {count} systemd nodes up in {:.1}s; logs in {}", started.elapsed().as_secs_f64(), farm.logs.display());
        Ok(farm)
    }

    /// What node `i` holds of capssh's work, for a person reading why a wait timed out: the job
    /// journal, each job's records and last log lines, the sentinel folder and the processes.
    pub fn capssh_work(&self, i: usize) -> String {
        match self.exec(i, CAPSSH_WORK_REPORT) {
            Ok(out) => String::from_utf8_lossy(&out.stdout).into_owned(),
            Err(err) => format!("could not read {}: {err:#}", self.nodes[i].name),
        }
    }

    /// Runs `shell` as root on node `i` (in all its namespaces; not over SSH).
    pub fn exec(&self, i: usize, shell: &str) -> anyhow::Result<Output> {
        let pid = self.nodes[i].init_pid()?;
        Command::new("nsenter")
            .args(["-t", &pid.to_string(), "-a", "--", "/bin/sh", "-c", shell])
            .env_clear()
            .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", "/root")
            .env("LANG", "C")
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running a command on {}", self.nodes[i].name))
    }

    /// [`exec`](Self::exec), failing unless it exits 0; returns stdout.
    pub fn exec_ok(&self, i: usize, shell: &str) -> anyhow::Result<String> {
        let out = self.exec(i, shell)?;
        if !out.status.success() {
            bail!(
                "`{shell}` on {}: {}: {}{}",
                self.nodes[i].name,
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Copies each node's journal and capssh job logs into [`logs`](Self::logs) (for a red run).
    pub fn collect_logs(&self) {
        for (i, node) in self.nodes.iter().enumerate() {
            let dir = self.logs.join(&node.name);
            let _ = fs::create_dir_all(&dir);
            if let Ok(out) = self.exec(i, "journalctl --no-pager -o short-precise 2>&1 | tail -n 20000") {
                let _ = fs::write(dir.join("journal.log"), &out.stdout);
            }
            if let Ok(out) = self.exec(i, "for f in /var/lib/capssh/jobs/*/log; do [ -f \"$f\" ] && echo \"=== $f\" && cat \"$f\"; done 2>/dev/null")
            {
                let _ = fs::write(dir.join("capssh-jobs.log"), &out.stdout);
            }
        }
    }

    fn create_bridge(&self) -> anyhow::Result<()> {
        run(Command::new("ip").args(["link", "add", BRIDGE, "type", "bridge"]))?;
        run(Command::new("ip").args(["addr", "add", &format!("{GATEWAY}/{PREFIX_LEN}"), "dev", BRIDGE]))?;
        run(Command::new("ip").args(["addr", "add", &format!("{ENDPOINT}/32"), "dev", BRIDGE]))?;
        run(Command::new("ip").args(["link", "set", BRIDGE, "up"]))
    }

    fn prepare_node(&self, base: &Path, i: usize) -> anyhow::Result<Node> {
        let name = format!("node-{i}");
        let address = Ipv4Addr::new(198, 18, 0, FIRST_NODE + i as u8);
        let dir = Path::new(STATE_ROOT).join(&name);
        for sub in ["upper", "work", "root", "containerd"] {
            fs::create_dir_all(dir.join(sub))?;
        }
        std::os::unix::fs::symlink(base, dir.join("lower"))?;
        let upper = dir.join("upper");
        fs::create_dir_all(upper.join("etc/ssh"))?;
        fs::write(upper.join("etc/hostname"), format!("{name}\n"))?;
        fs::write(upper.join("etc/hosts"), format!("127.0.0.1 localhost\n{address} {name}\n"))?;
        // A resolver, as every real host has one (CoreDNS forwards to it and will not start
        // without one): the gateway, on this machine, where nothing answers DNS, so a name
        // outside the cluster fails to resolve and no query leaves the machine.
        fs::write(upper.join("etc/resolv.conf"), format!("nameserver {GATEWAY}\n"))?;
        let key = upper.join("etc/ssh/ssh_host_ed25519_key");
        run(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", &name, "-f"]).arg(&key))?;
        let public = fs::read_to_string(key.with_extension("pub"))?;
        let host_key_public = public.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
        let ssh_dir = upper.join("root/.ssh");
        fs::create_dir_all(&ssh_dir)?;
        fs::set_permissions(upper.join("root"), fs::Permissions::from_mode(0o700))?;
        fs::set_permissions(&ssh_dir, fs::Permissions::from_mode(0o700))?;
        fs::write(ssh_dir.join("authorized_keys"), format!("{}\n", self.client_key.public_key))?;
        fs::set_permissions(ssh_dir.join("authorized_keys"), fs::Permissions::from_mode(0o600))?;
        fs::write(dir.join("boot.sh"), BOOT_SCRIPT)?;
        fs::set_permissions(dir.join("boot.sh"), fs::Permissions::from_mode(0o755))?;
        let netns = format!("{NETNS_PREFIX}{i}");
        run(Command::new("ip").args(["netns", "add", &netns]))?;
        Ok(Node {
            name,
            address,
            host_key_public,
            dir,
            netns,
            veth: format!("{VETH_PREFIX}{i}"),
            // Unique per run: a cgroup left half-removed by an earlier node must not be reused.
            cgroup: format!("{CGROUP_PREFIX}{}-{i}", std::process::id()),
            boot: Mutex::new(None),
        })
    }

    fn boot(&self, i: usize) -> anyhow::Result<()> {
        let node = &self.nodes[i];
        let mut command = Command::new(node.dir.join("boot.sh"));
        command.arg("outer").arg(&node.dir).arg(&node.netns).arg(&node.cgroup);
        let daemon = Daemon::start(&node.name, command, &self.logs.join(format!("{}-boot.log", node.name)))?;
        *node.boot_slot() = Some(daemon);
        Ok(())
    }

    /// Cuts the node's power and starts it again (not waiting for it): PID 1 goes, and with it
    /// every process of the node's PID namespace, sessions included; the disk (upper layer,
    /// containerd's folder) stays, and the next boot mounts a fresh /run and /tmp.
    fn power_cycle(&self, i: usize) -> anyhow::Result<()> {
        let node = &self.nodes[i];
        if let Some(mut boot) = node.boot_slot().take() {
            boot.kill();
        }
        // Every process gone, not only PID 1: a dying sshd still holds its sockets for a moment.
        let deadline = Instant::now() + Duration::from_secs(20);
        while netns_pids(&node.netns)?.next().is_some() {
            if Instant::now() > deadline {
                bail!("{}: processes left 20 s after its PID 1 was killed", node.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = fs::remove_dir_all(node.dir.join("work"));
        fs::create_dir_all(node.dir.join("work"))?;
        self.boot(i)
    }

    /// A hard reboot of node `i`, as capssh can observe one: its SSH connections drop, every
    /// process dies, `/run` and `/tmp` come back empty, the boot id changes, the disk stays, and
    /// sshd answers again with the same host key. Returns once sshd accepts connections.
    pub fn reboot(&self, i: usize) -> anyhow::Result<RebootReport> {
        let started = Instant::now();
        // What boot.sh gave the running boot (read here, not in the node: the cut comes at once).
        let before = fs::read_to_string(self.nodes[i].dir.join("boot_id")).ok().map(|b| b.trim().to_string());
        self.power_cycle(i)?;
        let down = started.elapsed();
        if let Err(err) = self.wait_booted(i) {
            eprintln!("{err:#}; booting {} again", self.nodes[i].name);
            self.power_cycle(i)?;
            self.wait_booted(i)?;
        }
        // The link lives in the node's network namespace, which outlives its processes; plugged
        // again should a boot have lost it.
        let replugged = !self.has_link(i)?;
        if replugged {
            let _ = Command::new("ip").args(["link", "delete", &self.nodes[i].veth]).stderr(Stdio::null()).status();
            self.plug(i)?;
        }
        wait_port(SocketAddr::from((self.nodes[i].address, 22)), Duration::from_secs(30))
            .with_context(|| format!("sshd on {}", self.nodes[i].name))?;
        let boot_id = self.boot_id(i)?;
        if before.as_deref() == Some(boot_id.as_str()) {
            bail!("{} kept its boot id {boot_id} across a reboot", self.nodes[i].name);
        }
        Ok(RebootReport { down, took: started.elapsed(), boot_id, replugged })
    }

    /// The boot id the node sees (`/proc/sys/kernel/random/boot_id`: a fresh one per boot).
    pub fn boot_id(&self, i: usize) -> anyhow::Result<String> {
        Ok(self.exec_ok(i, "cat /proc/sys/kernel/random/boot_id")?.trim().to_string())
    }

    fn has_link(&self, i: usize) -> anyhow::Result<bool> {
        let node = &self.nodes[i];
        let out = Command::new("ip").args(["-n", &node.netns, "-o", "addr", "show", "dev", "eth0"]).stderr(Stdio::null()).output()?;
        Ok(out.status.success() && String::from_utf8_lossy(&out.stdout).contains(&format!("inet {}/", node.address)))
    }

    fn wait_booted(&self, i: usize) -> anyhow::Result<()> {
        let node = &self.nodes[i];
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut last = String::new();
        while Instant::now() < deadline {
            if init_pid_in(&node.netns)?.is_some() {
                let out = self.exec(i, "systemctl is-system-running")?;
                last = String::from_utf8_lossy(&out.stdout).trim().to_string();
                match last.as_str() {
                    "running" => return Ok(()),
                    "degraded" => {
                        let failed = self.exec_ok(i, "systemctl --failed --no-legend --plain | cut -d' ' -f1")?;
                        bail!("{} booted degraded; failed units: {}", node.name, failed.trim());
                    }
                    _ => {}
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        bail!("{} did not boot in 90s (systemd says {last:?}); see {}", node.name, self.logs.display())
    }

    /// Connects the node to the bridge (after boot: see the module docs).
    fn plug(&self, i: usize) -> anyhow::Result<()> {
        let node = &self.nodes[i];
        // A fixed MAC address, as a real NIC has: a link made again after a reboot is not a new
        // neighbour, so the ARP entries for the node elsewhere stay right.
        let [.., last] = node.address.octets();
        let mac = format!("02:00:c6:12:00:{last:02x}");
        run(Command::new("ip").args(["link", "add", &node.veth, "type", "veth", "peer", "name", "eth0", "address", &mac, "netns", &node.netns]))?;
        run(Command::new("ip").args(["link", "set", &node.veth, "master", BRIDGE, "up"]))?;
        let n = ["ip", "-n", &node.netns];
        run(Command::new(n[0]).args(&n[1..]).args(["addr", "add", &format!("{}/{PREFIX_LEN}", node.address), "dev", "eth0"]))?;
        run(Command::new(n[0]).args(&n[1..]).args(["link", "set", "eth0", "up"]))?;
        run(Command::new(n[0]).args(&n[1..]).args(["link", "set", "lo", "up"]))?;
        run(Command::new(n[0]).args(&n[1..]).args(["route", "add", "default", "via", &GATEWAY.to_string()]))
    }
}

impl Drop for NodeFarm {
    fn drop(&mut self) {
        self.collect_logs();
        for node in &mut self.nodes {
            if let Some(mut boot) = node.boot_slot().take() {
                boot.kill(); // unshare --kill-child takes PID 1, and with it the whole node
            }
        }
        for node in &self.nodes {
            remove_node(&node.netns, &node.veth, &node.cgroup, &node.dir);
        }
        let _ = Command::new("ip").args(["link", "delete", BRIDGE]).stderr(Stdio::null()).status();
        for (key, value) in &self.kernel_sysctls {
            let _ = fs::write(Path::new("/proc/sys").join(key), value);
        }
    }
}

/// What [`NodeFarm::reboot`] saw.
#[derive(Clone, Debug)]
pub struct RebootReport {
    /// From the cut to the last process of the old boot gone.
    pub down: Duration,
    /// From the cut to sshd accepting connections again.
    pub took: Duration,
    /// The new boot's id.
    pub boot_id: String,
    /// The node's link was gone after the boot and was made again.
    pub replugged: bool,
}

/// The PIDs (as this machine sees them) of every process in network namespace `netns`.
fn netns_pids(netns: &str) -> anyhow::Result<impl Iterator<Item = u32>> {
    let out = Command::new("ip").args(["netns", "pids", netns]).stderr(Stdio::null()).output()?;
    let pids: Vec<u32> = String::from_utf8_lossy(&out.stdout).split_whitespace().filter_map(|p| p.parse().ok()).collect();
    Ok(pids.into_iter())
}

/// The PID (as this machine sees it) of PID 1 of the node living in `netns`.
fn init_pid_in(netns: &str) -> anyhow::Result<Option<u32>> {
    for pid in netns_pids(netns)? {
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let is_init = status.lines().find(|l| l.starts_with("NSpid:")).is_some_and(|l| l.split_whitespace().last() == Some("1"));
        if is_init && status.lines().next().is_some_and(|l| l.contains("systemd")) {
            return Ok(Some(pid));
        }
    }
    Ok(None)
}

/// Removes one node's processes, network, cgroups and files (tolerating parts already gone).
fn remove_node(netns: &str, veth: &str, cgroup: &str, dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = Command::new("ip").args(["netns", "pids", netns]).stderr(Stdio::null()).output();
        let pids: Vec<i32> =
            out.map(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().filter_map(|p| p.parse().ok()).collect()).unwrap_or_default();
        if pids.is_empty() || Instant::now() > deadline {
            break;
        }
        for pid in pids {
            // SAFETY: plain kill(2) of a process inside the node's network namespace.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = Command::new("ip").args(["link", "delete", veth]).stderr(Stdio::null()).status();
    // The namespace file stays busy for a moment after its last process is reaped.
    for _ in 0..50 {
        let deleted = Command::new("ip").args(["netns", "delete", netns]).stderr(Stdio::null()).status();
        if deleted.is_ok_and(|s| s.success()) || !Path::new("/run/netns").join(netns).exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if !cgroup.is_empty() {
        for hierarchy in fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
            remove_cgroup_tree(&hierarchy.path().join(cgroup));
        }
    }
    let _ = fs::remove_dir_all(dir);
}

/// cgroup directories can only be removed leaves first (and only once empty of processes).
fn remove_cgroup_tree(path: &Path) {
    if !path.is_dir() {
        return;
    }
    if let Ok(children) = fs::read_dir(path) {
        for child in children.flatten() {
            if child.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&child.path());
            }
        }
    }
    for _ in 0..50 {
        if fs::remove_dir(path).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whatever a crashed run left (the lock is held, so nothing else owns these).
fn remove_leftovers() -> anyhow::Result<()> {
    let out = Command::new("ip").args(["netns", "list"]).output()?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(netns) = line.split_whitespace().next().filter(|n| n.starts_with(NETNS_PREFIX)) else { continue };
        let i = &netns[NETNS_PREFIX.len()..];
        // No cgroup name: every stale node cgroup is removed below, whichever run named it.
        remove_node(netns, &format!("{VETH_PREFIX}{i}"), "", &Path::new(STATE_ROOT).join(format!("node-{i}")));
    }
    if let Ok(hierarchies) = fs::read_dir("/sys/fs/cgroup") {
        for hierarchy in hierarchies.flatten() {
            for cgroup in fs::read_dir(hierarchy.path()).into_iter().flatten().flatten() {
                if cgroup.file_name().to_string_lossy().starts_with(CGROUP_PREFIX) {
                    remove_cgroup_tree(&cgroup.path());
                }
            }
        }
    }
    let _ = Command::new("ip").args(["link", "delete", BRIDGE]).stderr(Stdio::null()).status();
    if let Ok(entries) = fs::read_dir(STATE_ROOT) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with("node-") {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
    Ok(())
}

fn make_client_key(dir: &Path) -> anyhow::Result<ClientKey> {
    fs::create_dir_all(dir)?;
    let private = dir.join("id_ed25519");
    if !private.exists() {
        run(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", "capssh-e2e-nodes", "-f"]).arg(&private))?;
    }
    let public_line = fs::read_to_string(private.with_extension("pub"))?;
    let public_key = public_line.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    let fingerprint = Command::new("ssh-keygen").arg("-lf").arg(private.with_extension("pub")).output()?;
    let fingerprint = String::from_utf8_lossy(&fingerprint.stdout).split_whitespace().nth(1).unwrap_or_default().to_string();
    Ok(ClientKey {
        algorithm: "ssh-ed25519".into(),
        private_key_pem: fs::read_to_string(&private)?,
        public_key_path: private.with_extension("pub"),
        private_key_path: private,
        public_key,
        fingerprint,
    })
}

fn wait_port(address: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if TcpStream::connect_timeout(&address, Duration::from_millis(500)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{address} does not accept connections after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let out = command.stdin(Stdio::null()).output().with_context(|| format!("running {command:?}"))?;
    if !out.status.success() {
        bail!("{command:?}: {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// The script of [`NodeFarm::capssh_work`] (and the chaos suites' host dumps).
pub const CAPSSH_WORK_REPORT: &str = "date -u +%FT%T.%NZ; echo '== journal'; cat /var/lib/capssh/jobs/journal; \
    echo '== runs'; cat /var/lib/capssh/bootstrap-count; echo '== /run/cluster-api'; ls -la --time-style=full-iso /run/cluster-api; \
    for d in /var/lib/capssh/jobs/*/; do echo \"== $d\"; ls -la --time-style=full-iso \"$d\"; \
    for f in pid started exit succeeded; do [ -e \"$d$f\" ] && echo \"$f: $(cat \"$d$f\")\"; done; tail -n 15 \"${d}log\"; done; \
    echo '== processes'; ps -eo pid,etime,stat,args | grep -v ' \\[' | tail -n 40";
