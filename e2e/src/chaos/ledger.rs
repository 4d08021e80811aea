//! What a chaos run counts: faults injected, what the machines did, and every invariant
//! violation (with the first few details of each kind, for the report).

use std::collections::BTreeMap;
use std::sync::Mutex;

/// The faults, by kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    /// SIGKILL of the replica holding the lease (or of the follower, or both).
    ManagerKill,
    /// sshd's session processes of a host killed (`HostFarm::drop_sessions`).
    SshDrop,
    /// A host's link down for up to 3 s (shorter than the connect timeout).
    LinkFlap,
    /// A machine deleted while its bootstrap job runs.
    DeleteMidBootstrap,
    /// A machine deleted before its bootstrap started (claiming, connecting).
    DeleteEarly,
    /// sshd's listener and sessions stopped (SIGSTOP), then continued.
    HungSshd,
    /// A host's link down for longer than the connect timeout.
    Blackhole,
    /// A small tmpfs over /var/lib/capssh/jobs for a round, filled up for a while.
    FullDisk,
    /// A node rebooted while its preparation job ran (`make chaos-reboots`).
    RebootPreparing,
    /// A node rebooted while its bootstrap job ran.
    RebootBootstrapping,
    /// A node rebooted while its reset job ran, after its machine was deleted.
    RebootResetting,
}

impl Fault {
    pub const ALL: [Fault; 8] = [
        Fault::ManagerKill,
        Fault::SshDrop,
        Fault::LinkFlap,
        Fault::DeleteMidBootstrap,
        Fault::DeleteEarly,
        Fault::HungSshd,
        Fault::Blackhole,
        Fault::FullDisk,
    ];

    /// The faults of the node-reboot run.
    pub const REBOOTS: [Fault; 3] = [Fault::RebootPreparing, Fault::RebootBootstrapping, Fault::RebootResetting];

    pub fn label(self) -> &'static str {
        match self {
            Fault::RebootPreparing => "node rebooted during preparation",
            Fault::RebootBootstrapping => "node rebooted during the bootstrap",
            Fault::RebootResetting => "node rebooted during the reset (cleanup)",
            Fault::ManagerKill => "manager killed (SIGKILL), restarted",
            Fault::SshDrop => "SSH sessions cut (drop_sessions)",
            Fault::LinkFlap => "link down briefly (0.2-3 s)",
            Fault::DeleteMidBootstrap => "machine deleted mid-bootstrap",
            Fault::DeleteEarly => "machine deleted before its bootstrap",
            Fault::HungSshd => "sshd hung (SIGSTOP, then SIGCONT)",
            Fault::Blackhole => "host blackholed (link down 12-40 s)",
            Fault::FullDisk => "full disk (tmpfs over the jobs folder)",
        }
    }
}

/// The invariants, by kind. Every kind is printed, with its count (which must be 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Violation {
    JobStartedTwice,
    BootstrapRanTwice,
    ProvisionedWithoutRun,
    ConsumerSwapped,
    SshMachineLeft,
    HostNotSettled,
    AvailableHostDirty,
    QuarantineWithoutReason,
    ManagerMemory,
    ConditionTooLong,
    EventNoteTooLong,
    SecretInStatus,
    SecretInEvent,
    SecretInLog,
    MachineNotSettled,
    UnexpectedFailure,
    BootstrapOutlivedStop,
    /// A machine whose node rebooted did not end as capssh says it must (see `chaos::reboots`).
    RebootOutcome,
}

impl Violation {
    /// The invariants of the node-reboot run: every one of the sshd run's, and the outcome a
    /// reboot must have.
    pub const REBOOT_RUN: [Violation; 18] = {
        let mut all = [Violation::RebootOutcome; 18];
        let mut i = 0;
        while i < Violation::ALL.len() {
            all[i] = Violation::ALL[i];
            i += 1;
        }
        all
    };

    pub const ALL: [Violation; 17] = [
        Violation::JobStartedTwice,
        Violation::BootstrapRanTwice,
        Violation::ProvisionedWithoutRun,
        Violation::ConsumerSwapped,
        Violation::SshMachineLeft,
        Violation::HostNotSettled,
        Violation::AvailableHostDirty,
        Violation::QuarantineWithoutReason,
        Violation::ManagerMemory,
        Violation::ConditionTooLong,
        Violation::EventNoteTooLong,
        Violation::SecretInStatus,
        Violation::SecretInEvent,
        Violation::SecretInLog,
        Violation::MachineNotSettled,
        Violation::UnexpectedFailure,
        Violation::BootstrapOutlivedStop,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Violation::JobStartedTwice => "a non-reset job id twice in a host's journal",
            Violation::BootstrapRanTwice => "a machine's bootstrap ran twice",
            Violation::ProvisionedWithoutRun => "provisioned, but its bootstrap never ran",
            Violation::ConsumerSwapped => "a host's consumerRef changed without None between",
            Violation::SshMachineLeft => "SSHMachine left after delete (finalizer stuck)",
            Violation::HostNotSettled => "host neither Available nor Quarantined after a round",
            Violation::AvailableHostDirty => "Available host fails verify-reset.sh",
            Violation::QuarantineWithoutReason => "Quarantined host without a reason",
            Violation::ManagerMemory => "manager peak RSS over the bound",
            Violation::ConditionTooLong => "condition message over 16 KiB",
            Violation::EventNoteTooLong => "event note over 1 kB",
            Violation::SecretInStatus => "secret fixture in an SSHMachine/SSHHost",
            Violation::SecretInEvent => "secret fixture in an Event",
            Violation::SecretInLog => "secret fixture in a manager log",
            Violation::MachineNotSettled => "machine not settled in time (stuck)",
            Violation::UnexpectedFailure => "machine failed without a planned cause",
            Violation::BootstrapOutlivedStop => "a bootstrap wrote its sentinel after the reset",
            Violation::RebootOutcome => "a machine did not end as its node's reboot requires",
        }
    }
}

/// How many details of each violation kind are kept for the report.
const DETAILS_KEPT: usize = 5;

#[derive(Default)]
struct Inner {
    faults: BTreeMap<Fault, u64>,
    violations: BTreeMap<Violation, (u64, Vec<String>)>,
    counters: BTreeMap<String, u64>,
    peak_rss_mib: f64,
}

/// Shared by every task of a run.
#[derive(Default)]
pub struct Ledger(Mutex<Inner>);

impl Ledger {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn fault(&self, fault: Fault) {
        *self.inner().faults.entry(fault).or_default() += 1;
    }

    pub fn faults(&self, fault: Fault) -> u64 {
        self.inner().faults.get(&fault).copied().unwrap_or(0)
    }

    pub fn violation(&self, kind: Violation, detail: impl Into<String>) {
        let detail = detail.into();
        eprintln!("chaos: VIOLATION {}: {detail}", kind.label());
        let mut inner = self.inner();
        let entry = inner.violations.entry(kind).or_default();
        entry.0 += 1;
        if entry.1.len() < DETAILS_KEPT {
            entry.1.push(detail);
        }
    }

    pub fn violations(&self, kind: Violation) -> (u64, Vec<String>) {
        self.inner().violations.get(&kind).cloned().unwrap_or_default()
    }

    pub fn total_violations(&self) -> u64 {
        self.inner().violations.values().map(|(n, _)| n).sum()
    }

    /// A free-form counter (machines provisioned, hosts repaired by reason, ...).
    pub fn count(&self, what: impl Into<String>, n: u64) {
        *self.inner().counters.entry(what.into()).or_default() += n;
    }

    pub fn counter(&self, what: &str) -> u64 {
        self.inner().counters.get(what).copied().unwrap_or(0)
    }

    pub fn counters_with_prefix(&self, prefix: &str) -> Vec<(String, u64)> {
        self.inner().counters.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(k, v)| (k[prefix.len()..].to_string(), *v)).collect()
    }

    /// Records a reading of a manager's VmHWM; the run's peak is the largest.
    pub fn rss(&self, mib: f64) {
        let mut inner = self.inner();
        inner.peak_rss_mib = inner.peak_rss_mib.max(mib);
    }

    pub fn peak_rss_mib(&self) -> f64 {
        self.inner().peak_rss_mib
    }
}
