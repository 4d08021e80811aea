//! BYOH's host agents, one per farm host, each inside its host's network, mount and UTS
//! namespaces (as the farm runs sshd), so it registers under the host's name, sees the host's
//! private /run, /etc/kubernetes and /root, and is counted with the host's processes.

use super::super::procfs::{self, ProcSample};
use super::NS;
use super::analysis::{AgentsSample, HOSTS_GROUP, host_user, summarize_agents};
use crate::hosts::HostFarm;
use crate::mgmt::ManagementPlane;
use crate::process::Daemon;
use anyhow::Context as _;
use std::path::{Path, PathBuf};
use std::process::Command;

const PATH_ENV: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// An IPv4 default route in each host's namespace, via the host's root-side address, while it
/// lives. BYOH's agent needs one: it takes its default interface from /proc/net/route, and
/// without it the agent's template parser is nil and the first write_files entry panics the
/// agent. The farm's hosts have none by design; the route only lets a host send to this
/// machine's own addresses (the root namespace does not forward: see `forwarding`).
pub struct DefaultRoutes<'a> {
    farm: &'a HostFarm,
    n: usize,
}

impl<'a> DefaultRoutes<'a> {
    pub fn add(farm: &'a HostFarm, n: usize) -> anyhow::Result<Self> {
        // Counts the routes added so far: a failure half-way removes those on drop.
        let mut routes = Self { farm, n: 0 };
        for h in farm.hosts.iter().take(n) {
            let gateway = h.gateway.to_string();
            run(Command::new("ip").args(["-n", &h.netns, "route", "replace", "default", "via", &gateway, "dev", "eth0"]))?;
            routes.n += 1;
        }
        Ok(routes)
    }
}

impl Drop for DefaultRoutes<'_> {
    fn drop(&mut self) {
        for h in self.farm.hosts.iter().take(self.n) {
            let _ = Command::new("ip").args(["-n", &h.netns, "route", "del", "default"]).output();
        }
    }
}

/// Whether this machine forwards IPv4 between interfaces (the hosts' default route leads nowhere
/// beyond this machine when it does not); recorded with the results.
pub fn forwarding() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").is_ok_and(|v| v.trim() == "1")
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    anyhow::ensure!(out.status.success(), "{cmd:?}: {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    Ok(())
}

/// Writes each of the first `n` hosts' `/root/.byoh/config` (its private /root), where the agent
/// looks for its kubeconfig: what BYOH's CSR flow would leave there, a client certificate for
/// `byoh:host:<host>` in `byoh:hosts`. The flow itself needs kube-controller-manager to sign
/// the CSR, which is not run here.
pub fn write_kubeconfigs(farm: &HostFarm, n: usize, plane: &ManagementPlane) -> anyhow::Result<()> {
    let port = plane.server.rsplit_once(':').map(|(_, p)| p.to_string()).context("the API server's port")?;
    for h in farm.hosts.iter().take(n) {
        let pair = plane.ca.client(&host_user(&h.name), Some(HOSTS_GROUP))?;
        // The API server listens on every address; from the host, its root-side address is the
        // way there. The serving certificate names localhost.
        let server = format!("https://{}:{port}", h.gateway);
        // The host's /root as its mount namespace (held by the anchor) sees it.
        let home = PathBuf::from(format!("/proc/{}/root/root/.byoh", h.anchor_pid()));
        std::fs::create_dir_all(&home).with_context(|| format!("creating {}", home.display()))?;
        std::fs::write(
            home.join("config"),
            crate::mgmt::kubeconfig_yaml(&server, Some("localhost"), &plane.ca.cert_pem(), &pair.cert_pem, &pair.key_pem),
        )?;
    }
    Ok(())
}

/// The running agents (killed with their children when dropped).
pub struct Agents {
    daemons: Vec<Daemon>,
    logs: Vec<PathBuf>,
}

impl Agents {
    /// Starts one agent per host of the first `n` ([`write_kubeconfigs`] first):
    /// `--namespace bench --skip-installation --metricsbindaddress=0`.
    pub fn start(farm: &HostFarm, n: usize, binary: &Path, logs: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(logs)?;
        // The hosts mask /tmp (and other folders) with their own: reach the binary through this
        // process's root instead, wherever the checkout is.
        let binary = binary.canonicalize().with_context(|| format!("{} is missing", binary.display()))?;
        let binary = format!("/proc/{}/root{}", std::process::id(), binary.display());
        let mut agents = Agents { daemons: Vec::with_capacity(n), logs: Vec::with_capacity(n) };
        for h in farm.hosts.iter().take(n) {
            let mut cmd = Command::new("nsenter");
            cmd.arg(format!("--target={}", h.anchor_pid()))
                .args(["--mount", "--uts", "--net", "--"])
                .arg(&binary)
                .args(["--namespace", NS, "--skip-installation", "--metricsbindaddress=0"])
                .env_clear()
                .env("PATH", PATH_ENV)
                .env("HOME", "/root")
                .env("LANG", "C")
                .current_dir("/");
            let log = logs.join(format!("{}-agent.log", h.name));
            agents.daemons.push(Daemon::start(&format!("{} byoh agent", h.name), cmd, &log)?);
            agents.logs.push(log);
        }
        Ok(agents)
    }

    /// Fails with the log tail of the first agent that exited (they are meant to run throughout).
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        for (daemon, log) in self.daemons.iter_mut().zip(&self.logs) {
            if let Some(status) = daemon.exit_status() {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                anyhow::bail!("{} exited ({status}): {}", daemon.name, lines[lines.len().saturating_sub(15)..].join("\n"));
            }
        }
        Ok(())
    }

    pub fn sample(&self) -> AgentsSample {
        let samples: Vec<ProcSample> = self.daemons.iter().filter_map(|d| procfs::sample(d.pid())).collect();
        summarize_agents(&samples)
    }

    /// CPU seconds of every agent and of the commands it ran and reaped (the bootstrap's runcmd).
    pub fn cpu_seconds(&self) -> f64 {
        self.daemons.iter().map(|d| procfs::cpu_with_children(d.pid())).sum()
    }
}
