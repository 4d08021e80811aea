//! The faults: what each does to a host, a machine or a manager, and the two loops that inject
//! them while a round runs (one for the managers, one for everything else). Every fault that
//! breaks something for a while repairs it itself before its task ends; a round waits for them.

use super::NS;
use super::bed::Bed;
use super::ledger::Fault;
use super::rng::Rng;
use super::watch::{Watches, condition, phase};
use capssh::api::v1alpha1::{MachinePhase, SSHMachine};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, DynamicObject};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// What the fault loops of one round work on.
pub struct RoundCtx {
    pub bed: Arc<Bed>,
    pub watches: Arc<Watches>,
    pub round: usize,
    /// The machines of this round.
    pub machines: HashSet<String>,
    /// Hosts with a timed fault in flight: one fault per host at a time.
    pub busy: Mutex<HashSet<usize>>,
    /// Machines the faults deleted (at most a third of the round's).
    pub deleted: Mutex<HashSet<String>>,
    /// Hosts that had a long fault (hung sshd, blackhole) this round: one each, and only a few
    /// at once, or most machines would spend the round waiting out backoffs and give-up times.
    pub long_faults: Mutex<(HashSet<usize>, usize)>,
}

impl RoundCtx {
    fn take_host(&self, host: usize) -> bool {
        self.busy.lock().unwrap_or_else(|e| e.into_inner()).insert(host)
    }

    /// Whether `host` may get a long fault now (and counts it in).
    fn start_long_fault(&self, host: usize) -> bool {
        let limit = (self.bed.farm.hosts.len() / 10).max(1);
        let mut long = self.long_faults.lock().unwrap_or_else(|e| e.into_inner());
        if long.1 >= limit || long.0.contains(&host) || self.busy.lock().unwrap_or_else(|e| e.into_inner()).contains(&host) {
            return false;
        }
        long.0.insert(host);
        long.1 += 1;
        true
    }

    fn free_host(&self, host: usize) {
        self.busy.lock().unwrap_or_else(|e| e.into_inner()).remove(&host);
    }

    /// A host for a fault: preferably one a machine of this round holds (that is where the work
    /// is), not already under a fault.
    fn pick_host(&self, rng: &mut Rng) -> Option<usize> {
        let busy = self.busy.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let claimed: Vec<usize> = self
            .watches
            .hosts
            .state()
            .iter()
            .filter(|h| h.spec.consumer_ref.as_ref().is_some_and(|c| self.machines.contains(&c.name)))
            .filter_map(|h| self.bed.host_index(h.metadata.name.as_deref()?))
            .filter(|i| !busy.contains(i))
            .collect();
        if rng.chance(0.85)
            && let Some(&host) = rng.pick(&claimed)
        {
            return Some(host);
        }
        let free: Vec<usize> = (0..self.bed.farm.hosts.len()).filter(|i| !busy.contains(i)).collect();
        rng.pick(&free).copied()
    }

    /// A live machine of this round in the given stage, not deleted yet.
    fn pick_machine(&self, rng: &mut Rng, bootstrapping: bool) -> Option<String> {
        let deleted = self.deleted.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if deleted.len() * 3 >= self.machines.len() {
            return None;
        }
        let candidates: Vec<String> = self
            .watches
            .machines
            .state()
            .iter()
            .filter(|m| m.metadata.deletion_timestamp.is_none())
            .filter(|m| m.metadata.name.as_ref().is_some_and(|n| self.machines.contains(n) && !deleted.contains(n)))
            .filter(|m| if bootstrapping { is_bootstrapping(m) } else { is_early(m) })
            .filter_map(|m| m.metadata.name.clone())
            .collect();
        rng.pick(&candidates).cloned()
    }
}

fn is_bootstrapping(m: &SSHMachine) -> bool {
    phase(m) == Some(MachinePhase::Provisioning) && condition(m, "BootstrapSucceeded").is_some_and(|c| c.reason == "Bootstrapping")
}

/// Claimed (or claiming), connecting or preparing: before the bootstrap job.
fn is_early(m: &SSHMachine) -> bool {
    matches!(phase(m), None | Some(MachinePhase::Pending | MachinePhase::Provisioning))
        && condition(m, "BootstrapSucceeded").is_none_or(|c| c.reason != "Bootstrapping")
}

/// Sleeps `wait` unless the round stops first; true when it stopped.
pub async fn stopped(stop: &mut watch::Receiver<bool>, wait: Duration) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(wait) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

/// Deletes a machine as Cluster API would (the SSHMachine, its Machine, its bootstrap Secret).
pub async fn delete_machine(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    let gone = |r: Result<_, kube::Error>| match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(err) => Err(err),
    };
    gone(Api::<SSHMachine>::namespaced(client.clone(), NS).delete(name, &DeleteParams::default()).await.map(|_| ()))?;
    let machines = Api::<DynamicObject>::namespaced_with(client.clone(), NS, &capssh::controllers::capi::machine_resource());
    gone(machines.delete(name, &DeleteParams::default()).await.map(|_| ()))?;
    gone(Api::<Secret>::namespaced(client.clone(), NS).delete(&format!("{name}-bootstrap"), &DeleteParams::default()).await.map(|_| ()))?;
    Ok(())
}

/// The PIDs of a host's sshd: its listener and every session process (pre-auth ones too).
fn sshd_pids(farm: &crate::hosts::HostFarm, host: usize) -> anyhow::Result<Vec<i32>> {
    let out = std::process::Command::new("ip").args(["netns", "pids", &farm.hosts[host].netns]).output()?;
    let mut pids: Vec<i32> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.starts_with(b"sshd") || c.starts_with(b"/usr/sbin/sshd")))
        .collect();
    if let Some(listener) = farm.hosts[host].sshd_pid() {
        pids.push(listener as i32);
    }
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}

fn signal_all(pids: &[i32], signal: i32) {
    for &pid in pids {
        // SAFETY: a plain kill(2) of a process of a test host.
        unsafe { libc::kill(pid, signal) };
    }
}

/// How often each kind comes up in a deck: SSH cuts most (they are cheap and common in life),
/// the long blackhole least (each one holds a host for up to 40 s).
const DECK: [(Fault, usize); 6] =
    [(Fault::SshDrop, 4), (Fault::LinkFlap, 3), (Fault::DeleteMidBootstrap, 3), (Fault::HungSshd, 2), (Fault::DeleteEarly, 1), (Fault::Blackhole, 1)];

/// The SSH and delete faults, one after another at random gaps, until the round stops. The
/// kinds are dealt from a shuffled deck, so every kind comes up in every few draws.
pub async fn inject(ctx: Arc<RoundCtx>, mut rng: Rng, mut stop: watch::Receiver<bool>) {
    let mean = ctx.bed.config.fault_every_seconds;
    let mut tasks = JoinSet::new();
    let mut deck: Vec<Fault> = Vec::new();
    while !stopped(&mut stop, rng.seconds(0.3 * mean, 1.7 * mean)).await {
        if deck.is_empty() {
            for (kind, n) in DECK {
                deck.extend(std::iter::repeat_n(kind, n));
            }
            rng.shuffle(&mut deck);
        }
        let Some(kind) = deck.pop() else { continue };
        let mut fault_rng = Rng::new(rng.next_u64());
        match kind {
            Fault::DeleteMidBootstrap | Fault::DeleteEarly => {
                let Some(name) = ctx.pick_machine(&mut fault_rng, kind == Fault::DeleteMidBootstrap) else {
                    // None at that stage now: tried again after the rest of the deck.
                    deck.insert(0, kind);
                    continue;
                };
                ctx.deleted.lock().unwrap_or_else(|e| e.into_inner()).insert(name.clone());
                eprintln!("chaos: round {}: {}: {name}", ctx.round, kind.label());
                match delete_machine(&ctx.bed.client, &name).await {
                    Ok(()) => ctx.bed.ledger.fault(kind),
                    Err(err) => eprintln!("chaos: deleting {name}: {err}"),
                }
            }
            _ => {
                let Some(host) = ctx.pick_host(&mut fault_rng) else { continue };
                let long = matches!(kind, Fault::HungSshd | Fault::Blackhole);
                if long && !ctx.start_long_fault(host) {
                    deck.insert(0, kind);
                    continue;
                }
                if !ctx.take_host(host) {
                    continue;
                }
                let ctx = ctx.clone();
                tasks.spawn(async move {
                    if let Err(err) = host_fault(&ctx, kind, host, &mut fault_rng).await {
                        eprintln!("chaos: {} on h{host}: {err:#}", kind.label());
                    }
                    ctx.free_host(host);
                    if long {
                        ctx.long_faults.lock().unwrap_or_else(|e| e.into_inner()).1 -= 1;
                    }
                });
            }
        }
    }
    while tasks.join_next().await.is_some() {}
}

/// One fault on one host; whatever it breaks is repaired before it returns.
async fn host_fault(ctx: &RoundCtx, kind: Fault, host: usize, rng: &mut Rng) -> anyhow::Result<()> {
    let bed = &ctx.bed;
    match kind {
        Fault::SshDrop => bed.on_farm(move |f| f.drop_sessions(host)).await?,
        Fault::LinkFlap | Fault::Blackhole => {
            let down = if kind == Fault::LinkFlap { rng.seconds(0.2, 3.0) } else { rng.seconds(12.0, 40.0) };
            bed.on_farm(move |f| f.set_link(host, false)).await?;
            tokio::time::sleep(down).await;
            // Up again, however long it takes: a host left down would fail every later round.
            while let Err(err) = bed.on_farm(move |f| f.set_link(host, true)).await {
                eprintln!("chaos: h{host} link up: {err:#}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        Fault::HungSshd => {
            let pids = bed.on_farm(move |f| sshd_pids(f, host)).await?;
            signal_all(&pids, libc::SIGSTOP);
            tokio::time::sleep(rng.seconds(5.0, 25.0)).await;
            signal_all(&pids, libc::SIGCONT);
        }
        _ => anyhow::bail!("{kind:?} is not a host fault"),
    }
    bed.ledger.fault(kind);
    Ok(())
}

/// Kills manager replicas while the round runs: the leader mostly (that is where the work is),
/// sometimes the follower or both; each killed replica is started again at once. After a kill
/// it waits for a leader again, so that the managers also get work done between kills.
pub async fn kill_managers(ctx: Arc<RoundCtx>, mut rng: Rng, mut stop: watch::Receiver<bool>) {
    let bed = &ctx.bed;
    let mean = bed.config.kill_every_seconds;
    loop {
        let leader = loop {
            match bed.replicas.revive() {
                Ok(0) => {}
                Ok(n) => bed.ledger.count("replica exited by itself, started again", n as u64),
                Err(err) => eprintln!("chaos: starting a replica again: {err:#}"),
            }
            if let Some(leader) = bed.replicas.leader(&bed.client).await {
                break leader;
            }
            if stopped(&mut stop, Duration::from_millis(500)).await {
                return;
            }
        };
        if stopped(&mut stop, rng.seconds(0.2 * mean, 1.8 * mean)).await {
            return;
        }
        let n = bed.replicas.count();
        let roll = rng.unit();
        let victims: Vec<usize> = if n == 1 || roll < 0.8 {
            vec![leader]
        } else if roll < 0.9 {
            vec![(leader + 1) % n]
        } else {
            (0..n).collect()
        };
        for slot in victims {
            let what = if slot == leader { "leader" } else { "follower" };
            let ctx = ctx.clone();
            match tokio::task::spawn_blocking(move || ctx.bed.replicas.kill_and_restart(slot)).await {
                Ok(Ok(())) => {
                    bed.ledger.fault(Fault::ManagerKill);
                    bed.ledger.count(format!("kills: {what}"), 1);
                }
                Ok(Err(err)) => eprintln!("chaos: restarting replica {slot}: {err:#}"),
                Err(err) => eprintln!("chaos: killing replica {slot}: {err}"),
            }
        }
    }
}

/// The full-disk fault of one host for one round: a small tmpfs over the jobs folder (mounted
/// before any machine of the round exists), filled to the last byte for a while mid-round.
pub async fn full_disk(ctx: Arc<RoundCtx>, host: usize, mut rng: Rng, mut stop: watch::Receiver<bool>) {
    let bed = &ctx.bed;
    if stopped(&mut stop, rng.seconds(2.0, 20.0)).await {
        return;
    }
    let fill = "dd if=/dev/zero of=/var/lib/capssh/jobs/.chaos-fill bs=4k 2>/dev/null; true";
    if let Err(err) = bed.on_farm(move |f| f.exec_ok(host, fill)).await {
        eprintln!("chaos: filling the disk of h{host}: {err:#}");
    }
    // Held for its time even if the round ends sooner: the disk must be usable again after.
    tokio::time::sleep(rng.seconds(5.0, 25.0)).await;
    if let Err(err) = bed.on_farm(move |f| f.exec_ok(host, "rm -f /var/lib/capssh/jobs/.chaos-fill")).await {
        eprintln!("chaos: emptying the disk of h{host}: {err:#}");
    }
}

/// Mounts the full-disk tmpfs on `host` (before the round's machines exist).
pub async fn mount_small_disk(bed: &Bed, host: usize) -> anyhow::Result<()> {
    let script = "mkdir -p /var/lib/capssh/jobs && mount -t tmpfs -o size=256k,mode=0700 capssh-chaos-full /var/lib/capssh/jobs";
    bed.on_farm(move |f| f.exec_ok(host, script)).await?;
    bed.ledger.fault(Fault::FullDisk);
    Ok(())
}

/// Unmounts it again, returning the journal it held (the round's job starts on that host).
pub async fn unmount_small_disk(bed: &Bed, host: usize) -> anyhow::Result<String> {
    let script = "cat /var/lib/capssh/jobs/journal 2>/dev/null; umount -l /var/lib/capssh/jobs";
    bed.on_farm(move |f| f.exec_ok(host, script)).await
}
