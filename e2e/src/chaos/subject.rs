//! What the invariant checks ([`super::checks`]) work on, whichever farm a run uses: hosts they
//! can run commands on as root, and a management plane with its managers' logs. The sshd run
//! ([`super::bed::Bed`]) and the node-reboot run ([`super::reboots`]) both provide it.

use super::ledger::Ledger;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;

/// Hosts the checks run shell commands on, as root, by index.
pub trait ExecHosts: Send + Sync + 'static {
    /// The hosts' names, by index (their SSHHosts are named so).
    fn names(&self) -> Vec<String>;
    fn exec(&self, host: usize, shell: &str) -> anyhow::Result<Output>;
    fn exec_ok(&self, host: usize, shell: &str) -> anyhow::Result<String>;
}

impl ExecHosts for crate::hosts::HostFarm {
    fn names(&self) -> Vec<String> {
        self.hosts.iter().map(|h| h.name.clone()).collect()
    }
    fn exec(&self, host: usize, shell: &str) -> anyhow::Result<Output> {
        crate::hosts::HostFarm::exec(self, host, shell)
    }
    fn exec_ok(&self, host: usize, shell: &str) -> anyhow::Result<String> {
        crate::hosts::HostFarm::exec_ok(self, host, shell)
    }
}

impl ExecHosts for crate::nodes::NodeFarm {
    fn names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }
    fn exec(&self, host: usize, shell: &str) -> anyhow::Result<Output> {
        crate::nodes::NodeFarm::exec(self, host, shell)
    }
    fn exec_ok(&self, host: usize, shell: &str) -> anyhow::Result<String> {
        crate::nodes::NodeFarm::exec_ok(self, host, shell)
    }
}

/// A chaos run's bed, as the checks see it.
pub trait Subject: Send + Sync {
    fn exec_hosts(&self) -> Arc<dyn ExecHosts>;
    fn client(&self) -> &kube::Client;
    fn ledger(&self) -> &Ledger;
    /// Where the run keeps its logs (the checks add `hosts/<host>.txt` there).
    fn dir(&self) -> &Path;
    /// Every manager process's log file.
    fn manager_logs(&self) -> Vec<PathBuf>;
    fn rss_bound_mib(&self) -> f64;

    fn host_names(&self) -> Vec<String> {
        self.exec_hosts().names()
    }
}

/// Runs a blocking command on host `i` off the async threads.
pub async fn exec_on<T: Send + 'static>(
    subject: &(impl Subject + ?Sized),
    op: impl FnOnce(&dyn ExecHosts) -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let hosts = subject.exec_hosts();
    tokio::task::spawn_blocking(move || op(&*hosts)).await?
}
