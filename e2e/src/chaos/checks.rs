//! The invariants checked after every round, against what the hosts, the API server and the
//! managers' logs hold; and the repair of quarantined hosts (what a person would do), so that
//! the next round has the whole pool again.

use super::ledger::Violation;
use super::subject::{Subject, exec_on};
use super::watch::{MachineSeen, Watches};
use super::{FIXTURES, NS};
use capssh::api::v1alpha1::{HostPhase, SSHHost};
use capssh::controllers::QUARANTINE_ANNOTATION;
use kube::api::{Api, ListParams, Patch, PatchParams};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// events.k8s.io refuses notes over 1 kB; capssh bounds them to 1000 bytes.
pub const MAX_EVENT_NOTE_BYTES: usize = 1000;

/// What the checks remember between rounds.
#[derive(Default)]
pub struct Checks {
    /// Per host: journal lines of full-disk tmpfs layers unmounted since.
    archive: Mutex<HashMap<usize, String>>,
    /// What was reported already (each finding counts once).
    reported: Mutex<HashSet<String>>,
    log_offsets: Mutex<HashMap<PathBuf, u64>>,
    /// Per (host, job id): starts allowed beyond the first (a preparation started again after a
    /// reboot lost it). Resets may always start again.
    restarts: Mutex<HashMap<(usize, String), usize>>,
}

fn free(h: &SSHHost) -> bool {
    h.spec.consumer_ref.is_none() && h.status.as_ref().and_then(|s| s.phase) == Some(HostPhase::Available)
}

fn quarantined(h: &SSHHost) -> bool {
    h.status.as_ref().and_then(|s| s.phase) == Some(HostPhase::Quarantined)
}

fn describe(h: &SSHHost) -> String {
    let status = h.status.as_ref();
    let ready = status.and_then(|s| s.conditions.iter().find(|c| c.r#type == "Ready")).map(|c| format!("{}: {}", c.reason, c.message));
    format!(
        "host {}: phase {:?}, consumer {:?}, Ready {}",
        h.metadata.name.as_deref().unwrap_or_default(),
        status.and_then(|s| s.phase),
        h.spec.consumer_ref.as_ref().map(|c| &c.name),
        ready.unwrap_or_default()
    )
}

impl Checks {
    fn first_time(&self, key: String) -> bool {
        self.reported.lock().unwrap_or_else(|e| e.into_inner()).insert(key)
    }

    /// One more start of job `id` on `host` is expected: a reboot lost the one before.
    pub fn allow_restart(&self, host: usize, id: &str) {
        *self.restarts.lock().unwrap_or_else(|e| e.into_inner()).entry((host, id.to_string())).or_default() += 1;
    }

    pub fn archive_journal(&self, host: usize, text: &str) {
        self.archive.lock().unwrap_or_else(|e| e.into_inner()).entry(host).or_default().push_str(text);
    }

    /// Waits until every host is free and Available, or Quarantined; reports the others.
    pub async fn hosts_settled(&self, bed: &impl Subject, watches: &Watches, timeout: Duration, when: &str) {
        let deadline = Instant::now() + timeout;
        loop {
            let hosts = watches.hosts.state();
            let unsettled: Vec<String> = hosts.iter().filter(|h| !free(h) && !quarantined(h)).map(|h| describe(h)).collect();
            if hosts.len() == bed.host_names().len() && unsettled.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                for detail in unsettled {
                    bed.ledger().violation(Violation::HostNotSettled, format!("{when}: {detail}"));
                }
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Journals, bootstrap runs, and the verification of every Available host.
    pub async fn hosts(&self, bed: &impl Subject, watches: &Watches) -> anyhow::Result<()> {
        let verify = capssh::bootstrap::scripts::VERIFY_RESET;
        let script = format!(
            "cat /var/lib/capssh/jobs/journal 2>/dev/null; echo '--- runs'; cat /var/lib/capssh/bootstrap-count 2>/dev/null; echo '--- verify'; {verify}"
        );
        let names = bed.host_names();
        let reads: Vec<(String, String, String)> = exec_on(bed, move |farm| {
            (0..farm.names().len())
                .map(|i| {
                    let out = farm.exec_ok(i, &script)?;
                    let (journal, rest) = out.split_once("--- runs\n").unwrap_or((&out, ""));
                    let (runs, verify) = rest.split_once("--- verify\n").unwrap_or((rest, ""));
                    let problems: Vec<&str> = verify.split_whitespace().collect();
                    Ok((journal.to_string(), runs.to_string(), problems.join(" ")))
                })
                .collect()
        })
        .await?;
        let hosts: HashMap<String, std::sync::Arc<SSHHost>> =
            watches.hosts.state().into_iter().filter_map(|h| Some((h.metadata.name.clone()?, h))).collect();
        let archive = self.archive.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let restarts = self.restarts.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut runs: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (i, (journal, bootstrap_runs, problems)) in reads.iter().enumerate() {
            let name = &names[i];
            let mut starts: HashMap<&str, usize> = HashMap::new();
            let archived = archive.get(&i).map(String::as_str).unwrap_or_default();
            for line in archived.lines().chain(journal.lines()) {
                if let Some(id) = line.split_whitespace().nth(1) {
                    *starts.entry(id).or_default() += 1;
                }
            }
            for (id, n) in starts {
                // A reset may run again after a lost one; nothing else may, but a preparation a reboot lost.
                let allowed = 1 + restarts.get(&(i, id.to_string())).copied().unwrap_or(0);
                if n > allowed && !id.starts_with("cleanup-") && self.first_time(format!("journal {name} {id}")) {
                    bed.ledger().violation(Violation::JobStartedTwice, format!("{name}: job {id} started {n} times"));
                }
            }
            for line in bootstrap_runs.lines() {
                if let Some(machine) = line.strip_prefix("run ") {
                    runs.entry(machine.trim().to_string()).or_default().push(name.clone());
                }
            }
            let Some(host) = hosts.get(name) else { continue };
            if free(host) && !problems.is_empty() && self.first_time(format!("dirty {name} {problems}")) {
                bed.ledger().violation(Violation::AvailableHostDirty, format!("{name} is Available but verify-reset.sh says: {problems}"));
                dump_host(bed, i, &format!("Available but dirty: {problems}")).await;
            }
            if quarantined(host) {
                let reason = host.metadata.annotations.as_ref().and_then(|a| a.get(QUARANTINE_ANNOTATION)).cloned().unwrap_or_default();
                if reason.trim().is_empty() {
                    bed.ledger().violation(Violation::QuarantineWithoutReason, describe(host));
                }
            }
        }
        for (machine, on) in &runs {
            if on.len() > 1 && self.first_time(format!("runs {machine} {}", on.len())) {
                bed.ledger().violation(Violation::BootstrapRanTwice, format!("{machine} bootstrapped {} times, on {on:?}", on.len()));
            }
        }
        let seen: Vec<(String, MachineSeen)> =
            watches.seen.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        for (machine, s) in seen {
            if s.provisioned && !runs.contains_key(&machine) && self.first_time(format!("norun {machine}")) {
                bed.ledger().violation(Violation::ProvisionedWithoutRun, format!("{machine} (host {:?}) was provisioned with no run", s.host));
            }
        }
        Ok(())
    }

    /// Event notes: bounded, and free of the fixtures.
    pub async fn events(&self, bed: &impl Subject) -> anyhow::Result<()> {
        let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(bed.client().clone(), NS);
        let mut params = ListParams::default().limit(500);
        loop {
            let page = api.list(&params).await?;
            for event in &page.items {
                let id = event.metadata.uid.clone().unwrap_or_default();
                let note = event.note.as_deref().unwrap_or_default();
                let about = format!("event {} ({:?})", event.metadata.name.as_deref().unwrap_or_default(), event.reason);
                if note.len() > MAX_EVENT_NOTE_BYTES && self.first_time(format!("note {id}")) {
                    bed.ledger().violation(Violation::EventNoteTooLong, format!("{about}: {} bytes", note.len()));
                }
                let text = serde_json::to_string(event).unwrap_or_default();
                if FIXTURES.iter().any(|f| text.contains(f)) && self.first_time(format!("event secret {id}")) {
                    bed.ledger().violation(Violation::SecretInEvent, format!("{about}: {note}"));
                }
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => return Ok(()),
            }
        }
    }

    /// The managers' logs since the last look: no fixture.
    pub fn logs(&self, bed: &impl Subject) -> anyhow::Result<()> {
        let mut offsets = self.log_offsets.lock().unwrap_or_else(|e| e.into_inner());
        for path in bed.manager_logs() {
            let offset = offsets.entry(path.clone()).or_default();
            let mut file = std::fs::File::open(&path)?;
            file.seek(SeekFrom::Start(*offset))?;
            let mut text = Vec::new();
            file.read_to_end(&mut text)?;
            let text = String::from_utf8_lossy(&text);
            for fixture in FIXTURES {
                for (at, _) in text.match_indices(fixture) {
                    let line_start = text[..at].rfind('\n').map(|p| p + 1).unwrap_or(0);
                    let line: String = text[line_start..].lines().next().unwrap_or_default().chars().take(400).collect();
                    if self.first_time(format!("log {} {}", path.display(), *offset as usize + at)) {
                        bed.ledger().violation(Violation::SecretInLog, format!("{}: {line}", path.display()));
                    }
                }
            }
            // Keep a fixture's length behind, so one split across two reads is still seen.
            *offset += (text.len() as u64).saturating_sub(64);
        }
        Ok(())
    }

    pub fn memory(&self, bed: &impl Subject) {
        let (peak, bound) = (bed.ledger().peak_rss_mib(), bed.rss_bound_mib());
        if peak > bound && self.first_time("rss".into()) {
            bed.ledger().violation(Violation::ManagerMemory, format!("peak VmHWM {peak:.1} MiB > bound {bound:.0} MiB"));
        }
    }

    /// Quarantined hosts (and orphaned claims) are reset by hand (the product's own reset script), checked, and
    /// returned to the pool, as the README tells a person to do.
    pub async fn repair_quarantined(&self, bed: &impl Subject, watches: &Watches, when: &str) -> anyhow::Result<usize> {
        let api: Api<SSHHost> = Api::namespaced(bed.client().clone(), NS);
        let mut repaired = 0;
        let machines: HashSet<String> = watches.machines.state().iter().filter_map(|m| m.metadata.name.clone()).collect();
        // A claim whose machine is gone (already reported as a host not settled) is repaired too,
        // or every later round would run one host short.
        let orphaned = |h: &SSHHost| !quarantined(h) && h.spec.consumer_ref.as_ref().is_some_and(|c| !machines.contains(&c.name));
        for host in watches.hosts.state().iter().filter(|h| quarantined(h) || orphaned(h)) {
            let name = host.metadata.name.clone().unwrap_or_default();
            let reason = host.metadata.annotations.as_ref().and_then(|a| a.get(QUARANTINE_ANNOTATION)).cloned().unwrap_or_default();
            if quarantined(host) {
                bed.ledger().count(format!("quarantined: {}", category(&reason)), 1);
            } else {
                bed.ledger().count("orphaned claim (its machine is gone), repaired by hand", 1);
            }
            eprintln!("chaos: repairing {}", describe(host));
            let Some(i) = bed.host_names().iter().position(|n| *n == name) else { continue };
            dump_host(bed, i, &format!("{when}, quarantined: {reason}")).await;
            let reset = capssh::bootstrap::scripts::RESET;
            exec_on(bed, move |f| f.exec_ok(i, reset)).await?;
            let patch = serde_json::json!({"metadata": {"annotations": {QUARANTINE_ANNOTATION: null}}, "spec": {"consumerRef": null}});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
            repaired += 1;
        }
        Ok(repaired)
    }
}

/// A quarantine reason, shortened to what caused it (for the report's counts).
pub fn category(reason: &str) -> String {
    if reason.contains("cannot reach") || reason.contains("timed out") || reason.contains("unreachable") {
        "host could not be reached to reset it".into()
    } else if let Some((_, left)) = reason.split_once("is not clean after the reset job") {
        let what: Vec<&str> = left.split_once(':').map(|(_, p)| p).unwrap_or_default().split_whitespace().collect();
        format!("not clean after the reset: {}", what.join(" "))
    } else if reason.contains("still runs") {
        "the reset still ran at the give-up time".into()
    } else {
        reason.chars().take(120).collect()
    }
}

/// What a host holds of capssh's work, into `<plane>/hosts/<host>.txt` (appended): for a person
/// reading why a host was quarantined or found dirty.
async fn dump_host(bed: &impl Subject, host: usize, why: &str) {
    let script = crate::nodes::CAPSSH_WORK_REPORT;
    let text = exec_on(bed, move |f| f.exec(host, script)).await.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    let name = bed.host_names().get(host).cloned().unwrap_or_default();
    let dir = bed.dir().join("hosts");
    let path = dir.join(format!("{name}.txt"));
    let body = format!("\n##### {why}\n{}\n", text.unwrap_or_else(|err| format!("could not read the host: {err:#}")));
    let written = std::fs::create_dir_all(&dir).and_then(|()| std::fs::OpenOptions::new().create(true).append(true).open(&path)).and_then(|mut f| {
        use std::io::Write;
        f.write_all(body.as_bytes())
    });
    match written {
        Ok(()) => eprintln!("chaos: what {name} holds: {}", path.display()),
        Err(err) => eprintln!("chaos: writing {}: {err}", path.display()),
    }
}
