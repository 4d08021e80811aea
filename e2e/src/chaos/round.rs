//! One round: machines created as Cluster API would, faults injected while they are claimed,
//! bootstrapped and deleted (in waves when there are more machines than hosts), then every host
//! back in the pool and the invariants checked.

use super::bed::{Bed, CLUSTER};
use super::checks::Checks;
use super::faults::{self, RoundCtx, delete_machine};
use super::ledger::{Fault, Violation};
use super::rng::Rng;
use super::watch::{Watches, condition, phase, provisioned};
use super::{NS, bootstrap_data};
use crate::scenario;
use capssh::api::v1alpha1::{MachinePhase, SSHMachine};
use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long hosts get to be Available (or Quarantined) once a round's machines are gone.
const HOSTS_SETTLE: Duration = Duration::from_secs(240);

/// Where a round's machines are, from the watch store.
#[derive(Default)]
struct Census {
    /// Provisioned or failed: done with, holding a host.
    settled: Vec<String>,
    /// Waiting for a host while every host is claimed.
    waiting: Vec<String>,
    /// Still at work (or waiting while some host is not claimed).
    busy: Vec<Arc<SSHMachine>>,
    deleting: Vec<Arc<SSHMachine>>,
}

fn census(watches: &Watches, names: &HashSet<String>) -> Census {
    let all_hosts_claimed = watches.hosts.state().iter().all(|h| h.spec.consumer_ref.is_some());
    let mut census = Census::default();
    for m in watches.machines.state() {
        let Some(name) = m.metadata.name.clone().filter(|n| names.contains(n)) else { continue };
        if m.metadata.deletion_timestamp.is_some() {
            census.deleting.push(m);
        } else if provisioned(&m) || phase(&m) == Some(MachinePhase::Failed) {
            census.settled.push(name);
        } else if all_hosts_claimed
            && phase(&m) == Some(MachinePhase::WaitingForHost)
            && condition(&m, "HostClaimed").is_some_and(|c| c.reason == "NoHostAvailable")
        {
            census.waiting.push(name);
        } else {
            census.busy.push(m);
        }
    }
    census
}

fn explain(m: &SSHMachine) -> String {
    let ready = condition(m, "Ready").map(|c| format!("{}: {}", c.reason, c.message.chars().take(300).collect::<String>()));
    let released = condition(m, "HostReleased").map(|c| format!("; HostReleased {}: {}", c.reason, c.message.chars().take(300).collect::<String>()));
    format!(
        "{} (phase {:?}, host {:?}): {}{}",
        m.metadata.name.as_deref().unwrap_or_default(),
        phase(m),
        m.spec.host_ref.as_ref().map(|h| &h.name),
        ready.unwrap_or_default(),
        released.unwrap_or_default()
    )
}

/// One machine's plan: how long its bootstrap sleeps, and whether it fails on purpose.
struct Planned {
    name: String,
    sleep: f64,
    fail: bool,
}

pub async fn run(bed: &Arc<Bed>, watches: &Arc<Watches>, checks: &Checks, index: usize, machines: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    let config = &bed.config;
    let mut rng = Rng::derive(config.seed, &format!("round-{index}"));
    let planned: Vec<Planned> = (0..machines)
        .map(|i| Planned {
            name: format!("r{index:02}-m{i:03}"),
            sleep: (rng.range(0.0, 5.0) * 10.0).round() / 10.0,
            fail: rng.chance(config.fail_percent / 100.0),
        })
        .collect();
    let names: HashSet<String> = planned.iter().map(|p| p.name.clone()).collect();
    let hosts = bed.farm.hosts.len();
    eprintln!("chaos: round {index}: {machines} machines on {hosts} hosts (seed {})", config.seed);

    // The full-disk hosts of this round get their small tmpfs before any machine exists.
    let mut full_disk: Vec<usize> = Vec::new();
    if rng.chance(config.full_disk_chance) {
        let count = if hosts >= 20 { 2 } else { 1 };
        let mut all: Vec<usize> = (0..hosts).collect();
        rng.shuffle(&mut all);
        for host in all.into_iter().take(count) {
            match faults::mount_small_disk(bed, host).await {
                Ok(()) => {
                    eprintln!("chaos: round {index}: full disk on h{host} for the round");
                    full_disk.push(host);
                }
                Err(err) => eprintln!("chaos: full disk on h{host}: {err:#}"),
            }
        }
    }

    let ctx = Arc::new(RoundCtx {
        bed: bed.clone(),
        watches: watches.clone(),
        round: index,
        machines: names.clone(),
        busy: Mutex::new(full_disk.iter().copied().collect()),
        deleted: Mutex::default(),
        long_faults: Mutex::default(),
    });
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let mut loops = vec![
        tokio::spawn(faults::inject(ctx.clone(), Rng::derive(config.seed, &format!("round-{index}/faults")), stop_rx.clone())),
        tokio::spawn(faults::kill_managers(ctx.clone(), Rng::derive(config.seed, &format!("round-{index}/kills")), stop_rx.clone())),
    ];
    for &host in &full_disk {
        let rng = Rng::derive(config.seed, &format!("round-{index}/disk-{host}"));
        loops.push(tokio::spawn(faults::full_disk(ctx.clone(), host, rng, stop_rx.clone())));
    }

    let client = bed.client.clone();
    let created: Vec<anyhow::Result<()>> = futures::stream::iter(planned.iter())
        .map(|p| {
            let client = client.clone();
            async move { scenario::machine(&client, NS, CLUSTER, &p.name, &bootstrap_data(&p.name, p.sleep, p.fail)).await }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    created.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    bed.ledger.count("machines created", machines as u64);
    let deadline = Instant::now() + Duration::from_secs(60);
    while watches.seen.lock().unwrap_or_else(|e| e.into_inner()).keys().filter(|k| names.contains(*k)).count() < machines {
        anyhow::ensure!(Instant::now() < deadline, "the watch did not see the round's machines within 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    waves(bed, watches, &names, &mut rng).await?;
    stop.send(true)?;
    for task in loops {
        task.await?;
    }

    for &host in &full_disk {
        match faults::unmount_small_disk(bed, host).await {
            Ok(journal) => checks.archive_journal(host, &journal),
            Err(err) => eprintln!("chaos: unmounting the small disk of h{host}: {err:#}"),
        }
    }
    checks.hosts_settled(&**bed, watches, HOSTS_SETTLE, &format!("round {index}")).await;
    checks.hosts(&**bed, watches).await?;
    checks.events(&**bed).await?;
    checks.logs(&**bed)?;
    bed.replicas.sample_rss();
    checks.memory(&**bed);
    if checks.repair_quarantined(&**bed, watches, &format!("round {index}")).await? > 0 {
        checks.hosts_settled(&**bed, watches, HOSTS_SETTLE, &format!("round {index}, after repairing quarantined hosts")).await;
    }
    tally(bed, watches, &planned, &full_disk, ctx.deleted.lock().unwrap_or_else(|e| e.into_inner()).len());
    eprintln!(
        "chaos: round {index} done in {:.0}s; faults so far: {}; violations so far: {}",
        started.elapsed().as_secs_f64(),
        Fault::ALL.iter().map(|f| bed.ledger.faults(*f)).sum::<u64>(),
        bed.ledger.total_violations()
    );
    Ok(())
}

/// Deletes the settled machines, wave after wave, until none is left: with more machines than
/// hosts, the waiting ones get the hosts the earlier waves release.
async fn waves(bed: &Bed, watches: &Watches, names: &HashSet<String>, rng: &mut Rng) -> anyhow::Result<()> {
    let timeout = Duration::from_secs(bed.config.settle_timeout_seconds);
    let mut reported: HashSet<String> = HashSet::new();
    let mut progress = Instant::now();
    loop {
        let deadline = Instant::now() + timeout;
        let mut timed_out = false;
        let census = loop {
            let census = census(watches, names);
            if progress.elapsed() > Duration::from_secs(20) {
                progress = Instant::now();
                eprintln!(
                    "chaos:   {} settled, {} waiting, {} busy, {} deleting; {} faults, {} kills so far",
                    census.settled.len(),
                    census.waiting.len(),
                    census.busy.len(),
                    census.deleting.len(),
                    Fault::ALL.iter().map(|f| bed.ledger.faults(*f)).sum::<u64>(),
                    bed.ledger.faults(Fault::ManagerKill)
                );
            }
            if census.busy.is_empty() && census.deleting.is_empty() {
                break census;
            }
            if Instant::now() > deadline {
                timed_out = true;
                for m in &census.busy {
                    if reported.insert(m.metadata.name.clone().unwrap_or_default()) {
                        bed.ledger.violation(Violation::MachineNotSettled, explain(m));
                    }
                }
                for m in &census.deleting {
                    bed.ledger.violation(Violation::SshMachineLeft, explain(m));
                    // Let the run go on, as a person would: the finalizer goes by hand.
                    let api: Api<SSHMachine> = Api::namespaced(bed.client.clone(), NS);
                    let patch = serde_json::json!({"metadata": {"finalizers": null}});
                    let _ = api.patch(m.metadata.name.as_deref().unwrap_or_default(), &PatchParams::default(), &Patch::Merge(&patch)).await;
                }
                break census;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let busy = census.busy.iter().filter_map(|m| m.metadata.name.clone());
        let mut wave: Vec<String> = if census.settled.is_empty() || timed_out {
            // Nothing holds a host any more, or the wait is over: whatever is left goes.
            census.settled.into_iter().chain(census.waiting).chain(busy).collect()
        } else {
            census.settled
        };
        if wave.is_empty() && census.deleting.is_empty() {
            return Ok(());
        }
        rng.shuffle(&mut wave);
        eprintln!("chaos: deleting a wave of {} machines", wave.len());
        for name in wave {
            delete_machine(&bed.client, &name).await?;
            tokio::time::sleep(rng.seconds(0.0, 0.2)).await;
        }
    }
}

/// The round's machines in the ledger: provisioned, failed (planned or not), deleted.
fn tally(bed: &Bed, watches: &Watches, planned: &[Planned], full_disk: &[usize], deleted_by_faults: usize) {
    let seen = watches.seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let full_disk_hosts: Vec<&str> = full_disk.iter().map(|&i| bed.farm.hosts[i].name.as_str()).collect();
    for p in planned {
        let Some(s) = seen.get(&p.name) else { continue };
        if s.provisioned {
            bed.ledger.count("machines provisioned", 1);
        }
        if let Some(message) = &s.failed {
            if p.fail && message.starts_with("BootstrapFailed") {
                bed.ledger.count("machines failed (planned: the bootstrap exits 3)", 1);
            } else if s.host.as_deref().is_some_and(|h| full_disk_hosts.contains(&h)) {
                bed.ledger.count("machines failed on a full disk", 1);
            } else {
                bed.ledger.violation(Violation::UnexpectedFailure, format!("{} on {:?}: {message}", p.name, s.host));
            }
        }
    }
    bed.ledger.count("machines deleted", planned.len() as u64);
    bed.ledger.count("machines deleted by faults (mid-bootstrap or early)", deleted_by_faults as u64);
    bed.ledger.count("rounds", 1);
}
