//! A farm of real OpenSSH hosts on this machine: one network namespace, one veth pair and one
//! `sshd` per host, each host with a private view of the directories capssh and kubeadm write.
//!
//! # What a host is
//!
//! - **Network.** A namespace `capssh-<pid>-<block>` holding `lo` and `eth0`, the inner end of a veth
//!   pair whose root-namespace end is `capssh<block>` (11 characters; interface names stop at 15).
//!   Each host owns one /30 of 198.18.0.0/15 (see *Addresses*): `.1` on the root side, `.2` inside.
//!   The namespace has no default route, so nothing on a host can reach beyond the root side. IPv6
//!   is off on both veth ends. The root side's neighbour entry for the host is permanent, so an
//!   unplugged host ([`HostFarm::set_link`]) drops packets silently (timeouts, never a quick "No
//!   route to host" after failed ARP) and answers again the moment it is plugged back.
//! - **Mounts and hostname.** An *anchor* process (`sleep infinity`, started with `ip netns exec NS
//!   unshare --mount --uts --propagation private`) owns the host's mount and UTS namespaces. Before it
//!   sleeps it mounts fresh tmpfs on [`PRIVATE_DIRS`] (so `/run/cluster-api`, `/var/lib/capssh`,
//!   `/etc/kubernetes`, ... are per host), creates `/run/sshd`, bind-mounts a per-host `/etc/hosts`
//!   and `/etc/hostname`, sets the hostname to the host's name, and brings the network up. The rest of
//!   the file system (users, `/etc/sudoers.d`, `/usr`, home folders) is this machine's, shared by all
//!   hosts. `/sys` is the namespace's own sysfs (as `ip netns exec` makes it), without the cgroup
//!   mounts.
//! - **sshd** runs as `nsenter --target <anchor> --mount --uts --net /usr/sbin/sshd -D -e -f CFG`, so
//!   it can crash, be killed or be restarted while the host's files stay, as on a real machine.
//!   [`HostFarm::exec`] enters the same namespaces, so test assertions see what the host sees.
//! - **Users.** `root`, [`SUDO_USER`] (passwordless sudo) and [`PASSWORD_SUDO_USER`] (sudo asks for a
//!   password; the password is [`HostFarm::sudo_password`], and sshd accepts it for that user only).
//!   They are accounts of this machine, made once (idempotently) and shared by every farm. Which
//!   client keys may log in as whom is the farm's: `AuthorizedKeysFile <farm>/authorized_keys/%u`.
//!
//! # Files
//!
//! The farm's state (sshd configs, host keys, client keys, `authorized_keys/<user>`, known_hosts)
//! lives in `/var/lib/capssh-e2e/farms/<pid>-<n>/`, not under the artifacts folder: sshd reads
//! `authorized_keys` as the logging-in user, so every folder on the way must be world-traversable,
//! and none may be under a directory the hosts mask (a checkout under /tmp would be). Logs (sshd,
//! anchors) go to `artifacts_dir(suite)/hostfarm-<n>/` and stay. The client keys are made once per
//! process (RSA-3072 takes seconds) in `/var/lib/capssh-e2e/keys/<pid>/` and copied into each farm.
//!
//! # Addresses
//!
//! 198.18.0.0/15 is cut into /30 *blocks*; block `b` is `198.18.0.0 + 4*b`. Blocks 0..63
//! (198.18.0.0/24) are left to other uses (the demo's control-plane endpoint 198.18.0.100); hosts
//! take blocks 64..32767. A farm claims each block by holding an exclusive `flock` on
//! `/run/capssh-e2e/blocks/<block>` for as long as it lives, so farms of one process and of several
//! processes never collide, and a crashed process's blocks free themselves. The search for free
//! blocks starts at a process-wide atomic counter seeded from the PID, so parallel farms rarely probe
//! the same blocks. The root namespace also gets `unreachable 198.18.0.0/15` (kept after the farm;
//! it is idempotent): a packet for a host that is gone fails here instead of following the default
//! route off the machine.
//!
//! # Clean-up
//!
//! Dropping the farm kills every process in its namespaces (sshd, the anchors, sessions, anything a
//! test started there), deletes the veth pairs and the namespaces, and removes its state folder
//! (logs stay under the artifacts folder). A run that crashed leaves namespaces behind (its daemons
//! die with it: see [`crate::process`]); every [`HostFarm::start`] removes the namespaces and veths
//! whose block lock is free (the owner is gone, whatever PID their name carries; processes left in
//! them are killed), and the state folders of PIDs that no longer exist.

use crate::process::Daemon;
use crate::tools::artifacts_dir;
use anyhow::{Context, anyhow, bail};
use base64::Engine as _;
use sha2::Digest as _;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{Read as _, Write as _};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

mod keys;
mod machine;
mod util;
use keys::*;
use machine::*;
pub(crate) use util::lock_wait;
use util::*;

/// The account with passwordless sudo (`capssh-sudo ALL=(ALL) NOPASSWD:ALL`).
pub const SUDO_USER: &str = "capssh-sudo";
/// The account whose sudo asks for a password (`capssh-pw ALL=(ALL) ALL`).
pub const PASSWORD_SUDO_USER: &str = "capssh-pw";
/// Every account a farm's client keys may log in as.
pub const USERS: [&str; 3] = ["root", SUDO_USER, PASSWORD_SUDO_USER];
/// Directories each host sees as its own empty tmpfs.
/// `/root` too: sshd runs root's shell, which reads the machine's /root/.bashrc (on these machines
/// it runs `pyenv rehash` under a lock; a host process killed mid-rehash left that lock behind and
/// stalled every later session for 60 s). A host must not share its home with the machine.
pub const PRIVATE_DIRS: &[&str] =
    &["/run", "/tmp", "/root", "/var/lib/capssh", "/etc/kubernetes", "/var/lib/kubelet", "/etc/cni/net.d", "/var/lib/etcd"];

const NETWORK: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 0);
const NETWORK_CIDR: &str = "198.18.0.0/15";
const FIRST_BLOCK: u32 = 64;
const END_BLOCK: u32 = 1 << 15; // a /15 holds 2^15 blocks of 4 addresses
const STATE_ROOT: &str = "/var/lib/capssh-e2e";
const LOCK_ROOT: &str = "/run/capssh-e2e";
const NETNS_PREFIX: &str = "capssh-";
const VETH_PREFIX: &str = "capssh";
const SUDOERS: &str = "/etc/sudoers.d/capssh-e2e";
const PATH_ENV: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// One client key pair made with ssh-keygen (OpenSSH private key format).
#[derive(Clone, Debug)]
pub struct ClientKey {
    /// The key type as it appears in the public key line: `ssh-ed25519`, `ssh-rsa`, `ecdsa-sha2-nistp256`.
    pub algorithm: String,
    pub private_key_path: PathBuf,
    pub public_key_path: PathBuf,
    /// The private key file's text (`-----BEGIN OPENSSH PRIVATE KEY-----` ...).
    pub private_key_pem: String,
    /// `<type> <base64>` (no comment).
    pub public_key: String,
    /// `SHA256:...`, as `ssh-keygen -lf` prints it.
    pub fingerprint: String,
}

/// The farm's client keys: three authorized for every user in [`USERS`], one authorized for nobody.
/// (The same keys in every farm of one process; the files are the farm's own copies.)
#[derive(Clone, Debug)]
pub struct ClientKeys {
    pub ed25519: ClientKey,
    /// RSA, 3072 bits.
    pub rsa: ClientKey,
    /// ECDSA on nistp256.
    pub ecdsa: ClientKey,
    /// An ed25519 key that no host accepts.
    pub unauthorized: ClientKey,
}

impl ClientKeys {
    /// The keys every host accepts for every user.
    pub fn authorized(&self) -> [&ClientKey; 3] {
        [&self.ed25519, &self.rsa, &self.ecdsa]
    }
}

/// One host of a farm.
pub struct TestHost {
    /// `h0`, `h1`, ...: also its hostname.
    pub name: String,
    /// Where its sshd listens, in 198.18.0.0/15, reachable from the root namespace.
    pub address: Ipv4Addr,
    pub port: u16,
    /// The network namespace (`ip netns` name).
    pub netns: String,
    /// The root-namespace end of its veth pair (its inner end is `eth0`).
    pub veth: String,
    /// The root-namespace address on `veth` (the host's only neighbour).
    pub gateway: Ipv4Addr,
    /// `ssh-ed25519 AAAA...` (no comment).
    pub host_key_public: String,
    /// `SHA256:...`, as `ssh-keygen -lf` prints it.
    pub host_key_fingerprint: String,
    /// The host's state folder on this machine (sshd_config, host key, pid file).
    pub dir: PathBuf,
    /// sshd's log (stderr, `LogLevel VERBOSE`), appended across restarts.
    pub sshd_log: PathBuf,
    /// Its /30 of 198.18.0.0/15 (block `b` starts at 198.18.0.0 + 4*b); names end in it.
    pub block: u32,
    _lock: File,
    anchor: Option<Daemon>,
    sshd: Mutex<Option<Daemon>>,
}

impl TestHost {
    /// `<address> <host key>`: a known_hosts line (port 22 needs no brackets).
    pub fn known_hosts_line(&self) -> String {
        if self.port == 22 {
            format!("{} {}", self.address, self.host_key_public)
        } else {
            format!("[{}]:{} {}", self.address, self.port, self.host_key_public)
        }
    }

    /// The running sshd's PID, if it runs.
    pub fn sshd_pid(&self) -> Option<u32> {
        let mut sshd = self.sshd.lock().expect("sshd lock");
        let d = sshd.as_mut()?;
        d.is_running().then(|| d.pid())
    }

    /// The PID of the process that holds the host's mount and UTS namespaces.
    pub fn anchor_pid(&self) -> u32 {
        self.anchor.as_ref().map(Daemon::pid).unwrap_or(0)
    }

    /// The host's sshd_config (read at each sshd start).
    pub fn sshd_config(&self) -> PathBuf {
        self.dir.join("sshd_config")
    }

    /// The host's private ed25519 host key.
    pub fn host_key_path(&self) -> PathBuf {
        self.dir.join("ssh_host_ed25519_key")
    }
}

// Tests share a farm between threads and async tasks.
const _: fn() = || {
    fn shareable<T: Send + Sync>() {}
    shareable::<HostFarm>();
};

/// A set of SSH test hosts; dropping it removes them.
pub struct HostFarm {
    pub hosts: Vec<TestHost>,
    pub client_key: ClientKeys,
    /// [`PASSWORD_SUDO_USER`]'s password (for its sudo, and for password logins as that user).
    pub sudo_password: String,
    /// A known_hosts file with every host's current key.
    pub known_hosts: PathBuf,
    /// The farm's state folder (keys, configs, authorized_keys); removed on drop.
    pub dir: PathBuf,
    /// Where the logs go (kept after the farm).
    pub logs: PathBuf,
    /// `<pid>-<n>`, unique on this machine while the farm lives.
    pub id: String,
}

impl HostFarm {
    /// Starts `count` hosts; logs go to `artifacts_dir(suite)/hostfarm-<n>/`.
    pub fn start(suite: &str, count: usize) -> anyhow::Result<HostFarm> {
        let started = Instant::now();
        let sudo_password = prepare_machine()?;
        remove_leftovers().context("removing leftovers of earlier runs")?;

        static FARMS: AtomicU32 = AtomicU32::new(0);
        let n = FARMS.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{n}", std::process::id());
        let dir = Path::new(STATE_ROOT).join("farms").join(&id);
        let logs = artifacts_dir(suite).join(format!("hostfarm-{n}"));
        create_dir(&dir, 0o755)?;
        create_dir(&dir.join("authorized_keys"), 0o755)?;
        fs::create_dir_all(&logs)?;

        let mut phases = String::new();
        let mut lap = Instant::now();
        let mut mark = |phases: &mut String, what: &str| {
            let _ = write!(phases, " {what} {:.2}s", lap.elapsed().as_secs_f64());
            lap = Instant::now();
        };

        let client_key = match make_client_keys(&dir) {
            Ok(keys) => keys,
            Err(err) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(err);
            }
        };
        // From here on, a failure drops the farm, which removes whatever was made.
        let mut farm = HostFarm { hosts: Vec::with_capacity(count), client_key, sudo_password, known_hosts: dir.join("known_hosts"), dir, logs, id };
        for user in USERS {
            let keys: Vec<String> = farm.client_key.authorized().iter().map(|k| k.public_key.clone()).collect();
            farm.set_authorized_keys(user, &keys)?;
        }
        mark(&mut phases, "client keys");
        farm.claim_blocks(count)?;
        mark(&mut phases, "blocks");
        farm.make_host_keys_and_configs()?;
        mark(&mut phases, "host keys");
        farm.create_networks()?;
        mark(&mut phases, "networks");
        farm.start_anchors()?;
        mark(&mut phases, "anchors");
        farm.write_known_hosts()?;
        for i in 0..farm.hosts.len() {
            farm.spawn_sshd(i)?;
        }
        farm.wait_sshds(&(0..farm.hosts.len()).collect::<Vec<_>>())?;
        mark(&mut phases, "sshd");
        eprintln!(
            "host farm {}: {count} hosts up in {:.2}s ({}); logs in {}",
            farm.id,
            started.elapsed().as_secs_f64(),
            phases.trim(),
            farm.logs.display()
        );
        Ok(farm)
    }

    /// Runs `shell` with `/bin/sh -c` as root *on* host `host` (in its network, mount and UTS
    /// namespaces; not over SSH). For assertions about what the host holds.
    pub fn exec(&self, host: usize, shell: &str) -> anyhow::Result<Output> {
        let h = self.host(host)?;
        let out = Command::new("nsenter")
            .arg(format!("--target={}", h.anchor_pid()))
            .args(["--mount", "--uts", "--net", "--", "/bin/sh", "-c", shell])
            .env_clear()
            .env("PATH", PATH_ENV)
            .env("HOME", "/root")
            .env("LANG", "C")
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running a command on {}", h.name))?;
        Ok(out)
    }

    /// [`exec`](Self::exec), failing unless the command exits 0; returns its stdout.
    pub fn exec_ok(&self, host: usize, shell: &str) -> anyhow::Result<String> {
        let out = self.exec(host, shell)?;
        if !out.status.success() {
            bail!("`{shell}` on {}: {}: {}", self.hosts[host].name, out.status, String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The real OpenSSH client, ready to log in to `host` as `user` with `key`, checking the host key
    /// against [`known_hosts`](Self::known_hosts) (StrictHostKeyChecking=yes), no agent, no config
    /// files, no prompts. Append the remote command.
    pub fn ssh_command(&self, host: usize, user: &str, key: &ClientKey) -> Command {
        self.ssh_command_with(host, user, key, &[])
    }

    /// [`ssh_command`](Self::ssh_command) with `options` (e.g. `["-o", "ConnectTimeout=2"]`) in
    /// front: ssh keeps the first value it reads for an option, so these win over the defaults.
    pub fn ssh_command_with(&self, host: usize, user: &str, key: &ClientKey, options: &[&str]) -> Command {
        let h = &self.hosts[host];
        let mut cmd = Command::new("ssh");
        cmd.args(options)
            .args(["-F", "/dev/null", "-o", "StrictHostKeyChecking=yes", "-o", "GlobalKnownHostsFile=/dev/null"])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", self.known_hosts.display()))
            .args(["-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-o", "BatchMode=yes"])
            .args(["-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR", "-i"])
            .arg(&key.private_key_path)
            .args(["-p", &h.port.to_string()])
            .arg(format!("{user}@{}", h.address))
            .arg("--")
            .stdin(Stdio::null())
            .env_remove("SSH_AUTH_SOCK");
        cmd
    }

    /// Replaces which public keys (`<type> <base64>` lines) may log in as `user` on every host.
    pub fn set_authorized_keys(&self, user: &str, keys: &[String]) -> anyhow::Result<()> {
        let mut text = keys.join("\n");
        text.push('\n');
        write_file(&self.dir.join("authorized_keys").join(user), &text, 0o644)
    }

    /// Gives host `host` a new ed25519 host key and restarts its sshd (the host's files stay).
    /// [`known_hosts`](Self::known_hosts) is rewritten; keep the old line first if a test needs it.
    pub fn replace_host_key(&mut self, host: usize) -> anyhow::Result<()> {
        self.stop_sshd(host)?;
        let h = self.host(host)?;
        let key = h.host_key_path();
        let _ = fs::remove_file(&key);
        let _ = fs::remove_file(key.with_extension("pub"));
        let (public, fingerprint) = ssh_keygen_host(&key, &h.name)?.wait_public()?;
        let h = &mut self.hosts[host];
        h.host_key_public = public;
        h.host_key_fingerprint = fingerprint;
        self.write_known_hosts()?;
        self.start_sshd(host)
    }

    /// Unplugs (`false`) or plugs back (`true`) the host's network: its `eth0` goes down, so packets
    /// to it are silently dropped (connections time out, as with a dead machine or a pulled cable).
    /// Processes and files on the host are untouched.
    pub fn set_link(&self, host: usize, up: bool) -> anyhow::Result<()> {
        let h = self.host(host)?;
        run(Command::new("ip").args(["-n", &h.netns, "link", "set", "eth0", if up { "up" } else { "down" }]))
    }
    /// Kills every SSH session process of `host` (sshd's per-connection children, the listener
    /// stays), as a reboot or a reinstall would: clients see their connections drop.
    pub fn drop_sessions(&self, host: usize) -> anyhow::Result<()> {
        let out = Command::new("ip").args(["netns", "pids", &self.hosts[host].netns]).output()?;
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            if cmdline.starts_with("sshd: ") && !cmdline.contains("[listener]") {
                // SAFETY: a plain kill(2) of a process in this host's namespace.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        Ok(())
    }

    /// SIGKILL to the host's sshd, as a crash would. Sessions already open keep running (sshd puts
    /// each connection in its own session), as they do on a real machine.
    pub fn kill_sshd(&self, host: usize) -> anyhow::Result<()> {
        let h = self.host(host)?;
        if let Some(mut d) = h.sshd.lock().expect("sshd lock").take() {
            d.kill();
        }
        Ok(())
    }

    /// SIGTERM to the host's sshd; waits until it is gone.
    pub fn stop_sshd(&self, host: usize) -> anyhow::Result<()> {
        let h = self.host(host)?;
        if let Some(mut d) = h.sshd.lock().expect("sshd lock").take() {
            d.stop(Duration::from_secs(5));
        }
        Ok(())
    }

    /// Starts the host's sshd again (after [`kill_sshd`](Self::kill_sshd) or
    /// [`stop_sshd`](Self::stop_sshd)); returns once it accepts connections.
    pub fn start_sshd(&self, host: usize) -> anyhow::Result<()> {
        self.host(host)?;
        if self.hosts[host].sshd_pid().is_some() {
            bail!("sshd of {} is running already", self.hosts[host].name);
        }
        self.spawn_sshd(host)?;
        self.wait_sshds(&[host])
    }

    /// Stops and starts the host's sshd.
    pub fn restart_sshd(&self, host: usize) -> anyhow::Result<()> {
        self.stop_sshd(host)?;
        self.start_sshd(host)
    }

    fn host(&self, host: usize) -> anyhow::Result<&TestHost> {
        self.hosts.get(host).ok_or_else(|| anyhow!("the farm has {} hosts, not host {host}", self.hosts.len()))
    }

    fn write_known_hosts(&self) -> anyhow::Result<()> {
        let text: String = self.hosts.iter().map(|h| h.known_hosts_line() + "\n").collect();
        write_file(&self.known_hosts, &text, 0o644)
    }

    /// Claims `count` free blocks and records one host per block (no network yet).
    fn claim_blocks(&mut self, count: usize) -> anyhow::Result<()> {
        static NEXT: OnceLock<AtomicU32> = OnceLock::new();
        let next = NEXT.get_or_init(|| AtomicU32::new(std::process::id().wrapping_mul(2_654_435_761)));
        let span = END_BLOCK - FIRST_BLOCK;
        let blocks_dir = Path::new(LOCK_ROOT).join("blocks");
        let mut probed = 0;
        let mut stale = Vec::new();
        while self.hosts.len() < count {
            if probed >= span {
                bail!("no free address block left in {NETWORK_CIDR} for {count} hosts");
            }
            probed += 1;
            let block = FIRST_BLOCK + next.fetch_add(1, Ordering::Relaxed) % span;
            let Some(lock) = try_lock(&blocks_dir.join(format!("{block:05}")))? else { continue };
            stale.push(block);
            let i = self.hosts.len();
            let name = format!("h{i}");
            let base = u32::from(NETWORK) + 4 * block;
            let dir = self.dir.join("hosts").join(&name);
            create_dir(&dir, 0o755)?;
            self.hosts.push(TestHost {
                sshd_log: self.logs.join(format!("{name}-sshd.log")),
                name,
                address: Ipv4Addr::from(base + 2),
                port: 22,
                netns: format!("{NETNS_PREFIX}{}-{block:05}", std::process::id()),
                veth: format!("{VETH_PREFIX}{block:05}"),
                gateway: Ipv4Addr::from(base + 1),
                host_key_public: String::new(),
                host_key_fingerprint: String::new(),
                dir,
                block,
                _lock: lock,
                anchor: None,
                sshd: Mutex::new(None),
            });
        }
        // What a dead owner of these blocks left behind is ours to remove now.
        let blocks: HashSet<u32> = stale.into_iter().collect();
        purge(|b| blocks.contains(&b))
    }

    fn make_host_keys_and_configs(&mut self) -> anyhow::Result<()> {
        let farm_keys = self.dir.join("authorized_keys");
        for chunk in (0..self.hosts.len()).collect::<Vec<_>>().chunks(32) {
            let pending: Vec<(usize, KeyGen)> = chunk
                .iter()
                .map(|&i| Ok((i, ssh_keygen_host(&self.hosts[i].host_key_path(), &self.hosts[i].name)?)))
                .collect::<anyhow::Result<_>>()?;
            for (i, keygen) in pending {
                let (public, fingerprint) = keygen.wait_public()?;
                let h = &mut self.hosts[i];
                h.host_key_public = public;
                h.host_key_fingerprint = fingerprint;
            }
        }
        for h in &self.hosts {
            let config = format!(
                "# capssh e2e test host {name} (farm {farm})\n\
                 ListenAddress {address}:{port}\n\
                 HostKey {key}\n\
                 PidFile {dir}/sshd.pid\n\
                 AuthorizedKeysFile {farm_keys}/%u\n\
                 StrictModes no\n\
                 UsePAM no\n\
                 PermitRootLogin prohibit-password\n\
                 PubkeyAuthentication yes\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 PermitEmptyPasswords no\n\
                 UseDNS no\n\
                 PrintMotd no\n\
                 PrintLastLog no\n\
                 X11Forwarding no\n\
                 LogLevel VERBOSE\n\
                 Subsystem sftp internal-sftp\n\
                 Match User {PASSWORD_SUDO_USER}\n\
                 \tPasswordAuthentication yes\n",
                name = h.name,
                farm = self.id,
                address = h.address,
                port = h.port,
                key = h.host_key_path().display(),
                dir = h.dir.display(),
                farm_keys = farm_keys.display(),
            );
            write_file(&h.sshd_config(), &config, 0o644)?;
            let hosts = format!("127.0.0.1\tlocalhost\n{}\t{}\n::1\tlocalhost ip6-localhost ip6-loopback\n", h.address, h.name);
            write_file(&h.dir.join("hosts"), &hosts, 0o644)?;
            write_file(&h.dir.join("hostname"), &format!("{}\n", h.name), 0o644)?;
        }
        Ok(())
    }

    /// One `ip -batch` for every host's namespace and veth pair (serialised machine-wide: `ip netns
    /// add` sets up /run/netns on first use and is not safe to race).
    fn create_networks(&self) -> anyhow::Result<()> {
        let mut batch = format!("route replace unreachable {NETWORK_CIDR}\n");
        for h in &self.hosts {
            // The root side's neighbour entry for the host is permanent: with the host's link down,
            // packets to it vanish (timeouts) instead of failing ARP ("No route to host"), and it
            // answers again the moment its link is up.
            let _ = write!(
                batch,
                "netns add {ns}\n\
                 link add {veth} address {root_mac} type veth peer name eth0 address {host_mac} netns {ns}\n\
                 addr add {gw}/30 dev {veth}\n\
                 neigh replace {address} lladdr {host_mac} dev {veth} nud permanent\n\
                 link set {veth} up\n",
                ns = h.netns,
                veth = h.veth,
                gw = h.gateway,
                address = h.address,
                root_mac = mac(0, h.block),
                host_mac = mac(1, h.block),
            );
        }
        let _guard = lock_wait(&Path::new(LOCK_ROOT).join("net.lock"))?;
        ip_batch(&batch, false)?;
        // IPv4 only on the root side too (before the host side comes up, so before any IPv6
        // address is made: a veth has no carrier until both ends are up).
        for h in &self.hosts {
            let knob = Path::new("/proc/sys/net/ipv6/conf").join(&h.veth).join("disable_ipv6");
            if knob.exists() {
                fs::write(&knob, "1").with_context(|| format!("writing {}", knob.display()))?;
            }
        }
        Ok(())
    }

    fn start_anchors(&mut self) -> anyhow::Result<()> {
        let mut mounts = String::new();
        for dir in PRIVATE_DIRS {
            let mode = if *dir == "/tmp" { "1777" } else { "0755" };
            let _ = writeln!(mounts, "mount -t tmpfs -o mode={mode} capssh-host {dir}");
        }
        for i in 0..self.hosts.len() {
            let h = &self.hosts[i];
            let ready = h.dir.join("anchor.ready");
            let _ = fs::remove_file(&ready);
            let script = format!(
                "set -e\n\
                 # Other namespaces' bind mounts must not be pinned by this host's copy of /run.\n\
                 while umount -l /run/netns 2>/dev/null; do :; done\n\
                 {mounts}\
                 mkdir -m 0755 /run/sshd\n\
                 mkdir -m 1777 /run/lock\n\
                 mount --bind {dir}/hosts /etc/hosts\n\
                 if [ -e /etc/hostname ]; then mount --bind {dir}/hostname /etc/hostname; fi\n\
                 hostname {name}\n\
                 # IPv4 only: no IPv6 link-local chatter on the veth.\n\
                 if [ -e /proc/sys/net/ipv6/conf/eth0/disable_ipv6 ]; then echo 1 > /proc/sys/net/ipv6/conf/eth0/disable_ipv6; fi\n\
                 ip -batch - <<EOF\n\
                 link set lo up\n\
                 addr add {address}/30 dev eth0\n\
                 link set eth0 up\n\
                 EOF\n\
                 touch {ready}\n\
                 exec sleep infinity\n",
                dir = h.dir.display(),
                name = h.name,
                address = h.address,
                ready = ready.display(),
            );
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", &h.netns, "unshare", "--mount", "--uts", "--propagation", "private"])
                .args(["/bin/sh", "-c", &script])
                .env_clear()
                .env("PATH", PATH_ENV)
                .current_dir("/");
            let log = self.logs.join(format!("{}-anchor.log", h.name));
            let daemon = Daemon::start(&format!("{} anchor", h.name), cmd, &log)?;
            self.hosts[i].anchor = Some(daemon);
        }
        let deadline = Instant::now() + READY_TIMEOUT;
        for h in &mut self.hosts {
            let ready = h.dir.join("anchor.ready");
            while !ready.exists() {
                let anchor = h.anchor.as_mut().expect("anchor started");
                if !anchor.is_running() {
                    let log = self.logs.join(format!("{}-anchor.log", h.name));
                    bail!("the namespaces of {} could not be set up: {}", h.name, tail(&log));
                }
                if Instant::now() > deadline {
                    bail!("{} was not set up within {READY_TIMEOUT:?}", h.name);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        Ok(())
    }

    fn spawn_sshd(&self, host: usize) -> anyhow::Result<()> {
        let h = &self.hosts[host];
        let _ = fs::remove_file(h.dir.join("sshd.pid"));
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--target={}", h.anchor_pid()))
            .args(["--mount", "--uts", "--net", "--", "/usr/sbin/sshd", "-D", "-e", "-f"])
            .arg(h.sshd_config())
            .env_clear()
            .env("PATH", PATH_ENV)
            .env("LANG", "C")
            .current_dir("/");
        let daemon = Daemon::start(&format!("{} sshd", h.name), cmd, &h.sshd_log)?;
        *h.sshd.lock().expect("sshd lock") = Some(daemon);
        Ok(())
    }

    /// sshd writes its PidFile once its listening socket is bound: that is the signal.
    fn wait_sshds(&self, hosts: &[usize]) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        for &i in hosts {
            let h = &self.hosts[i];
            let pid_file = h.dir.join("sshd.pid");
            loop {
                let mut guard = h.sshd.lock().expect("sshd lock");
                let Some(daemon) = guard.as_mut() else { bail!("sshd of {} is not started", h.name) };
                let pid = daemon.pid();
                if fs::read_to_string(&pid_file).is_ok_and(|s| s.trim() == pid.to_string()) {
                    break;
                }
                if !daemon.is_running() {
                    guard.take();
                    bail!("sshd of {} exited: {}", h.name, tail(&h.sshd_log));
                }
                drop(guard);
                if Instant::now() > deadline {
                    bail!("sshd of {} did not come up within {READY_TIMEOUT:?}: {}", h.name, tail(&h.sshd_log));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        Ok(())
    }

    fn teardown(&mut self) {
        // Everything in the farm's namespaces first (sshd, anchors, sessions, commands of tests) ...
        let namespaces: Vec<PathBuf> = self.hosts.iter().map(|h| Path::new("/run/netns").join(&h.netns)).collect();
        kill_processes_in(&namespaces);
        // ... then reap our own children ...
        for h in &mut self.hosts {
            if let Some(mut d) = h.sshd.get_mut().expect("sshd lock").take() {
                d.kill();
            }
            if let Some(mut d) = h.anchor.take() {
                d.kill();
            }
        }
        // ... then the namespaces and veths.
        let netns: Vec<String> = self.hosts.iter().map(|h| h.netns.clone()).collect();
        let veths: Vec<String> = self.hosts.iter().map(|h| h.veth.clone()).collect();
        delete_networks(&netns, &veths);
        if let Err(err) = fs::remove_dir_all(&self.dir) {
            eprintln!("host farm {}: removing {}: {err}", self.id, self.dir.display());
        }
        // The block locks go with the hosts, after the network is gone.
        self.hosts.clear();
    }
}

impl Drop for HostFarm {
    fn drop(&mut self) {
        self.teardown();
    }
}
