//! One node's cycles: a machine pinned to the node is created, prepared, bootstrapped and
//! deleted, and the node is rebooted while the phase the cycle aims at runs on it. Each cycle
//! then checks the outcome that reboot must have (see the module above).

use super::{CLUSTER, RebootBed, VERSION};
use crate::chaos::checks::Checks;
use crate::chaos::faults::delete_machine;
use crate::chaos::ledger::{Fault, Violation};
use crate::chaos::rng::Rng;
use crate::chaos::watch::{Watches, condition, phase, provisioned};
use crate::chaos::{NS, bootstrap_data};
use crate::scenario;
use capssh::api::v1alpha1::{HostPhase, MachinePhase, SSHMachine};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The stage a reboot aims at, by the prefix of its job's id on the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Preparing,
    Bootstrapping,
    Resetting,
}

impl Stage {
    fn job_prefix(self) -> &'static str {
        match self {
            Stage::Preparing => "prepare",
            Stage::Bootstrapping => "bootstrap",
            Stage::Resetting => "cleanup",
        }
    }

    fn fault(self) -> Fault {
        match self {
            Stage::Preparing => Fault::RebootPreparing,
            Stage::Bootstrapping => Fault::RebootBootstrapping,
            Stage::Resetting => Fault::RebootResetting,
        }
    }
}

/// Runs cycles on `node` until every phase had its reboots (or the cap).
pub async fn drive(bed: Arc<RebootBed>, watches: Arc<Watches>, checks: Arc<Checks>, node: usize, mut rng: Rng) -> anyhow::Result<()> {
    let wanted = |stage: Stage| bed.ledger.faults(stage.fault()) < bed.config.min_per_phase;
    for index in 0..bed.config.max_cycles_per_node {
        if ![Stage::Preparing, Stage::Bootstrapping, Stage::Resetting].into_iter().any(wanted) {
            break;
        }
        // One reboot before the bootstrap ends (a machine rebooted while preparing must still
        // be provisioned, so it is not rebooted again while bootstrapping), and maybe one in the reset.
        let during = match (wanted(Stage::Preparing), wanted(Stage::Bootstrapping)) {
            (true, true) => Some(if (node + index).is_multiple_of(2) { Stage::Preparing } else { Stage::Bootstrapping }),
            (true, false) => Some(Stage::Preparing),
            (false, true) => Some(Stage::Bootstrapping),
            (false, false) => None,
        };
        let reset = wanted(Stage::Resetting) || rng.chance(0.3);
        one_cycle(&bed, &watches, &checks, Plan { node, index, during, reset }, &mut rng).await?;
    }
    Ok(())
}

/// One cycle of one node: which stages get a reboot.
struct Plan {
    node: usize,
    index: usize,
    /// A reboot while preparing or while bootstrapping (not both: see [`drive`]).
    during: Option<Stage>,
    /// A reboot while the reset runs.
    reset: bool,
}

async fn one_cycle(bed: &RebootBed, watches: &Watches, checks: &Checks, plan: Plan, rng: &mut Rng) -> anyhow::Result<()> {
    let Plan { node, index, during, reset } = plan;
    let name = format!("n{node}-c{index:02}");
    let host = bed.farm.nodes[node].name.clone();
    eprintln!("chaos-reboots: {name} on {host}: reboot during {during:?}, during the reset: {reset}");
    if during == Some(Stage::Preparing) {
        // A fresh host: without the record of an earlier preparation the job installs everything.
        exec(bed, node, "rm -f /var/lib/capssh/prepared").await?;
    }
    let preparation = json!({"mode": "Artifacts", "artifacts": {"url": bed.mirror_url, "checksumsSHA256": bed.mirror_pin}});
    let data = bootstrap_data(&name, bed.config.bootstrap_seconds, false);
    scenario::machine_with(&bed.client, NS, CLUSTER, &name, &data, Some(VERSION), json!({"hostRef": {"name": host}, "preparation": preparation}))
        .await?;
    bed.ledger.count("machines created", 1);

    let rebooted = match during {
        Some(stage) => {
            // Somewhere inside the job: the bootstrap's sleep, or any point of the preparation
            // up to a few seconds in (downloads, checks, installs, image imports).
            let latest = if stage == Stage::Bootstrapping { bed.config.bootstrap_seconds - 3.0 } else { 6.0 };
            reboot_during(bed, watches, node, &name, stage, rng.range(0.3, latest)).await?
        }
        None => None,
    };
    if let (Some(Stage::Preparing), Some(id)) = (during, &rebooted) {
        checks.allow_restart(node, id);
    }
    let settled = settled(watches, &name, bed.config.settle_timeout_seconds).await;
    judge(bed, node, &name, during.filter(|_| rebooted.is_some()), rebooted.as_deref(), settled.as_deref()).await?;

    delete_machine(&bed.client, &name).await?;
    let reset_id = if reset { reboot_during(bed, watches, node, &name, Stage::Resetting, 0.0).await? } else { None };
    if !gone(watches, &name, bed.config.settle_timeout_seconds).await {
        let m = watches.machines.state().into_iter().find(|m| m.metadata.name.as_deref() == Some(name.as_str()));
        bed.ledger.violation(
            Violation::SshMachineLeft,
            format!("{name}: {:?}", m.as_deref().and_then(|m| condition(m, "HostReleased")).map(|c| &c.message)),
        );
        let patch = json!({"metadata": {"finalizers": null}});
        let _ = Api::<SSHMachine>::namespaced(bed.client.clone(), NS).patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await;
    }
    if !host_free(watches, &host, bed.config.settle_timeout_seconds).await {
        bed.ledger.violation(Violation::HostNotSettled, format!("{host} not Available after {name} was deleted"));
    }
    if let Some(id) = reset_id {
        let starts = journal_starts(bed, node, &id).await?;
        if starts >= 2 {
            bed.ledger.count("resets lost to a reboot, run again", 1);
        } else {
            bed.ledger.count("resets that ended just before the reboot", 1);
        }
    }
    Ok(())
}

/// Whether the machine ended as its reboot requires.
async fn judge(
    bed: &RebootBed,
    node: usize,
    name: &str,
    rebooted: Option<Stage>,
    job: Option<&str>,
    machine: Option<&SSHMachine>,
) -> anyhow::Result<()> {
    let Some(m) = machine else {
        bed.ledger.violation(Violation::MachineNotSettled, format!("{name}: neither provisioned nor failed in time (reboot during {rebooted:?})"));
        return Ok(());
    };
    let ready = condition(m, "Ready").map(|c| format!("{}: {}", c.reason, c.message)).unwrap_or_default();
    match rebooted {
        Some(Stage::Bootstrapping) => {
            let bootstrap = condition(m, "BootstrapSucceeded");
            let lost = bootstrap.is_some_and(|c| c.reason == "BootstrapFailed" && c.message.contains("process is gone"));
            if lost {
                bed.ledger.count("bootstraps lost to a reboot, reported failed", 1);
            } else if provisioned(m) {
                // The job had ended and its success was recorded on disk before the power went.
                bed.ledger.count("bootstraps that ended just before the reboot (provisioned)", 1);
            } else {
                bed.ledger.violation(Violation::RebootOutcome, format!("{name}: bootstrap rebooted, expected BootstrapFailed (lost), got {ready}"));
            }
        }
        _ if provisioned(m) => {
            bed.ledger.count("machines provisioned", 1);
            if let (Some(Stage::Preparing), Some(id)) = (rebooted, job) {
                let starts = journal_starts(bed, node, id).await?;
                let prepared = condition(m, "HostPrepared").is_some_and(|c| c.reason == "Prepared");
                if starts == 2 && prepared {
                    bed.ledger.count("preparations lost to a reboot, started again, then done", 1);
                } else if !prepared {
                    bed.ledger.violation(Violation::RebootOutcome, format!("{name}: provisioned, but HostPrepared is not Prepared"));
                } else {
                    bed.ledger.count("preparations that ended just before the reboot", 1);
                }
            }
        }
        _ => {
            let kind = if rebooted == Some(Stage::Preparing) { Violation::RebootOutcome } else { Violation::UnexpectedFailure };
            bed.ledger.violation(kind, format!("{name}: expected provisioned (reboot during {rebooted:?}), got {ready}"));
        }
    }
    Ok(())
}

/// Waits for `stage`'s job of the machine to run on the node (its process alive in this boot),
/// lets it run `after` seconds more, and reboots the node if it still runs then. The id of the
/// job the reboot cut, or None when the job was not seen running (it ended first).
async fn reboot_during(bed: &RebootBed, watches: &Watches, node: usize, name: &str, stage: Stage, after: f64) -> anyhow::Result<Option<String>> {
    let deadline = Instant::now() + Duration::from_secs(bed.config.settle_timeout_seconds);
    let seen = loop {
        if let Some(id) = running_job(bed, node, stage).await? {
            break id;
        }
        let m = watches.machines.state().into_iter().find(|m| m.metadata.name.as_deref() == Some(name));
        let past = match stage {
            Stage::Resetting => m.is_none(),
            _ => m.as_deref().is_some_and(|m| provisioned(m) || phase(m) == Some(MachinePhase::Failed)),
        };
        if past || Instant::now() > deadline {
            bed.ledger.count(format!("reboots that missed their phase ({})", stage.job_prefix()), 1);
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(if stage == Stage::Resetting { 30 } else { 150 })).await;
    };
    tokio::time::sleep(Duration::from_secs_f64(after)).await;
    if running_job(bed, node, stage).await?.as_deref() != Some(seen.as_str()) {
        bed.ledger.count(format!("reboots that missed their phase ({})", stage.job_prefix()), 1);
        return Ok(None);
    }
    let report = bed.reboot(node).await?;
    bed.ledger.fault(stage.fault());
    eprintln!(
        "chaos-reboots: {name}: {} rebooted while {seen} ran ({after:.1}s after it was seen); sshd back after {:.1}s",
        bed.farm.nodes[node].name,
        report.took.as_secs_f64()
    );
    Ok(Some(seen))
}

/// The id of the job of `stage` whose process runs on the node in this boot, if any.
async fn running_job(bed: &RebootBed, node: usize, stage: Stage) -> anyhow::Result<Option<String>> {
    let script = format!(
        "boot=$(cat /proc/sys/kernel/random/boot_id); for d in /var/lib/capssh/jobs/{}-*; do \
         [ -d \"$d/run\" ] && [ ! -f \"$d/exit\" ] && [ -s \"$d/pid\" ] && [ \"$(cat \"$d/boot\" 2>/dev/null)\" = \"$boot\" ] \
         && kill -0 \"$(cat \"$d/pid\")\" 2>/dev/null && echo \"${{d##*/}}\"; done; true",
        stage.job_prefix()
    );
    Ok(exec(bed, node, &script).await?.lines().next().map(str::to_string))
}

/// How often job `id` was started on the node (its lines in the journal).
async fn journal_starts(bed: &RebootBed, node: usize, id: &str) -> anyhow::Result<usize> {
    let journal = exec(bed, node, "cat /var/lib/capssh/jobs/journal 2>/dev/null; true").await?;
    Ok(journal.lines().filter(|l| l.split_whitespace().nth(1) == Some(id)).count())
}

async fn exec(bed: &RebootBed, node: usize, script: &str) -> anyhow::Result<String> {
    let (farm, script) = (bed.farm.clone(), script.to_string());
    tokio::task::spawn_blocking(move || farm.exec_ok(node, &script)).await?
}

/// The machine once provisioned or failed; None if neither in time.
async fn settled(watches: &Watches, name: &str, timeout_seconds: u64) -> Option<Arc<SSHMachine>> {
    let deadline = Instant::now() + Duration::from_secs(timeout_seconds);
    while Instant::now() < deadline {
        let m = watches.machines.state().into_iter().find(|m| m.metadata.name.as_deref() == Some(name));
        if let Some(m) = m.filter(|m| provisioned(m) || phase(m) == Some(MachinePhase::Failed)) {
            return Some(m);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    None
}

async fn gone(watches: &Watches, name: &str, timeout_seconds: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(timeout_seconds);
    while Instant::now() < deadline {
        if !watches.machines.state().iter().any(|m| m.metadata.name.as_deref() == Some(name)) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    false
}

async fn host_free(watches: &Watches, host: &str, timeout_seconds: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(timeout_seconds);
    while Instant::now() < deadline {
        let free = watches.hosts.state().iter().any(|h| {
            h.metadata.name.as_deref() == Some(host)
                && h.spec.consumer_ref.is_none()
                && h.status.as_ref().and_then(|s| s.phase) == Some(HostPhase::Available)
        });
        if free {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    false
}
