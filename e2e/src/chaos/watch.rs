//! Watches kept for the whole run: every version of every SSHHost and SSHMachine the API server
//! sends is checked (claims only change through None, condition sizes, secret fixtures), and
//! the latest versions are kept in stores for the rounds to decide what to do next.

use super::ledger::{Ledger, Violation};
use super::{FIXTURES, NS};
use capssh::api::v1alpha1::{Condition, MachinePhase, SSHHost, SSHMachine};
use capssh::bootstrap::SENTINEL;
use futures::StreamExt;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// The API's bound on a condition message that capssh promises to stay under.
pub const MAX_CONDITION_BYTES: usize = 16 * 1024;

/// What the run saw of one machine over its life.
#[derive(Clone, Debug, Default)]
pub struct MachineSeen {
    pub provisioned: bool,
    pub host: Option<String>,
    /// The Ready message the first time it was seen Failed.
    pub failed: Option<String>,
}

pub struct Watches {
    pub machines: Store<SSHMachine>,
    pub hosts: Store<SSHHost>,
    pub seen: Arc<Mutex<HashMap<String, MachineSeen>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Watches {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A consumer as the claim records it: name and UID.
type Consumer = Option<(String, Option<String>)>;

#[derive(Default)]
struct Claims {
    /// Per host: the last consumer seen, and whether a relist happened since (a change seen
    /// across a relist may have passed through None unobserved).
    last: HashMap<String, (Consumer, bool)>,
}

/// Checks run on every version of an object: condition sizes and secret fixtures. Each object
/// is reported once per kind of violation.
struct Checker {
    ledger: Arc<Ledger>,
    reported: Mutex<HashSet<(Violation, String)>>,
}

impl Checker {
    fn report(&self, kind: Violation, object: &str, detail: String) {
        if self.reported.lock().unwrap_or_else(|e| e.into_inner()).insert((kind, object.to_string())) {
            self.ledger.violation(kind, detail);
        }
    }

    fn check<K: serde::Serialize>(&self, what: &str, object: &K, conditions: &[Condition]) {
        for c in conditions {
            if c.message.len() > MAX_CONDITION_BYTES {
                self.report(Violation::ConditionTooLong, what, format!("{what} condition {} is {} bytes", c.r#type, c.message.len()));
            }
        }
        let text = serde_json::to_string(object).unwrap_or_default();
        for fixture in FIXTURES {
            if let Some(at) = text.find(fixture) {
                let context: String = text[at.saturating_sub(120)..].chars().take(200).collect();
                self.report(Violation::SecretInStatus, what, format!("{what} holds `{fixture}`: …{context}…"));
            }
        }
    }
}

pub fn start(client: &kube::Client, ledger: Arc<Ledger>) -> Watches {
    let checker = Arc::new(Checker { ledger: ledger.clone(), reported: Mutex::default() });
    let seen: Arc<Mutex<HashMap<String, MachineSeen>>> = Arc::default();

    let (hosts, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(Api::<SSHHost>::namespaced(client.clone(), NS), watcher::Config::default()).default_backoff());
    let host_task = {
        let (checker, ledger) = (checker.clone(), ledger.clone());
        let mut claims = Claims::default();
        tokio::spawn(async move {
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::Init) => claims.last.values_mut().for_each(|(_, relisted)| *relisted = true),
                    Ok(watcher::Event::Apply(host) | watcher::Event::InitApply(host)) => {
                        let name = host.metadata.name.clone().unwrap_or_default();
                        checker.check(&format!("SSHHost {name}"), &host, host.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or(&[]));
                        let consumer: Consumer = host.spec.consumer_ref.as_ref().map(|c| (c.name.clone(), c.uid.clone()));
                        let (last, relisted) = claims.last.entry(name.clone()).or_insert((None, false));
                        if *last != consumer {
                            if let (Some(before), Some(after)) = (last.as_ref(), consumer.as_ref()) {
                                let detail = format!("host {name}: consumer {before:?} -> {after:?}");
                                if *relisted {
                                    // Not proof: the None in between may have come and gone while relisting.
                                    ledger.count("watch: consumer change across a relist (not judged)", 1);
                                    eprintln!("chaos: {detail} across a relist");
                                } else {
                                    ledger.violation(Violation::ConsumerSwapped, detail);
                                }
                            }
                            *last = consumer;
                        }
                        *relisted = false;
                    }
                    Ok(_) => {}
                    Err(err) => eprintln!("chaos: host watch: {err}"),
                }
            }
        })
    };

    let (machines, writer) = reflector::store();
    let stream =
        reflector::reflector(writer, watcher(Api::<SSHMachine>::namespaced(client.clone(), NS), watcher::Config::default()).default_backoff());
    let machine_task = {
        let seen = seen.clone();
        tokio::spawn(async move {
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                let machine = match event {
                    Ok(watcher::Event::Apply(m) | watcher::Event::InitApply(m)) => m,
                    Ok(_) => continue,
                    Err(err) => {
                        eprintln!("chaos: machine watch: {err}");
                        continue;
                    }
                };
                let name = machine.metadata.name.clone().unwrap_or_default();
                let conditions = machine.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or(&[]);
                checker.check(&format!("SSHMachine {name}"), &machine, conditions);
                // The reset removes /run/cluster-api: a sentinel found after it was written by a
                // bootstrap that should have been stopped first (or started after the stop).
                if let Some(c) = conditions.iter().find(|c| c.message.contains("not clean after the reset job") && c.message.contains(SENTINEL)) {
                    checker.report(Violation::BootstrapOutlivedStop, &name, format!("{name}: {}", c.message));
                }
                let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                let entry = seen.entry(name).or_default();
                if let Some(host) = &machine.spec.host_ref {
                    entry.host = Some(host.name.clone());
                }
                if provisioned(&machine) {
                    entry.provisioned = true;
                }
                if phase(&machine) == Some(MachinePhase::Failed) && entry.failed.is_none() {
                    let ready = condition(&machine, "Ready").map(|c| format!("{}: {}", c.reason, c.message)).unwrap_or_default();
                    entry.failed = Some(ready);
                }
            }
        })
    };
    Watches { machines, hosts, seen, tasks: vec![host_task, machine_task] }
}

pub fn provisioned(m: &SSHMachine) -> bool {
    m.status.as_ref().and_then(|s| s.initialization.as_ref()).and_then(|i| i.provisioned) == Some(true)
}

pub fn phase(m: &SSHMachine) -> Option<MachinePhase> {
    m.status.as_ref().and_then(|s| s.phase)
}

pub fn condition<'a>(m: &'a SSHMachine, kind: &str) -> Option<&'a Condition> {
    m.status.as_ref()?.conditions.iter().find(|c| c.r#type == kind)
}
