//! The pure parts of the BYOH run (no root, no API server): who the requests in the audit log
//! came from, what the agents cost together, when a machine counts as provisioned and a host as
//! free, and whether hosts and machines paired one to one.

use super::super::observe::{Requests, count_requests_by};
use super::super::procfs::ProcSample;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// The BYOH manager's client certificate CN (group system:masters) on the management plane.
pub const MANAGER_USER: &str = "byoh-bench-manager";
/// The CN in the `<cluster>-kubeconfig` Secret: the manager's requests to the "workload cluster"
/// (the same API server: the Nodes whose providerID it sets, its health checks).
pub const WORKLOAD_USER: &str = "byoh-bench-workload";
/// The group of every agent, as BYOH's CSR flow would issue it (`byoh:host:<host>` in `byoh:hosts`);
/// BYOH's RBAC for agents is bound to it.
pub const HOSTS_GROUP: &str = "byoh:hosts";

pub fn host_user(host: &str) -> String {
    format!("byoh:host:{host}")
}

/// An audit policy recording one event per request (at RequestReceived) of the manager, of its
/// workload-cluster client and of every agent.
pub fn audit_policy() -> String {
    format!(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [ResponseStarted, ResponseComplete, Panic]\nrules:\n\
         - level: Metadata\n  users: [\"{MANAGER_USER}\", \"{WORKLOAD_USER}\"]\n\
         - level: Metadata\n  userGroups: [\"{HOSTS_GROUP}\"]\n- level: None\n"
    )
}

/// The requests of one phase, by who made them.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RequestsByWho {
    /// The manager on the management plane.
    pub manager: Requests,
    /// The manager's workload-cluster client (Node get/watch/patch, health checks).
    pub workload: Requests,
    /// Every agent together.
    pub agents: Requests,
}

/// Counts the audit log text of one phase by identity.
pub fn requests_by_who(log: &[u8]) -> RequestsByWho {
    let [manager, workload, agents] = count_requests_by(log, |user, groups| match user {
        MANAGER_USER => Some(0),
        WORKLOAD_USER => Some(1),
        _ if groups.contains(&HOSTS_GROUP) => Some(2),
        _ => None,
    });
    RequestsByWho { manager, workload, agents }
}

/// The agents at one moment, from /proc.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct AgentsSample {
    /// Agents running (the others have exited).
    pub running: usize,
    pub rss_mib_total: f64,
    pub rss_mib_mean: f64,
    pub rss_mib_max: f64,
    /// Summed RssAnon: the agents' private memory (their shared binary text counted once less per agent).
    pub rss_anon_mib_total: f64,
    /// Summed VmHWM: every agent's own peak.
    pub peak_rss_mib_total: f64,
    pub peak_rss_mib_max: f64,
}

pub fn summarize_agents(samples: &[ProcSample]) -> AgentsSample {
    let running = samples.len();
    let total = |f: fn(&ProcSample) -> f64| samples.iter().map(f).sum::<f64>();
    let max = |f: fn(&ProcSample) -> f64| samples.iter().map(f).fold(0.0, f64::max);
    let rss_mib_total = total(|s| s.rss_mib);
    AgentsSample {
        running,
        rss_mib_total,
        rss_mib_mean: if running > 0 { rss_mib_total / running as f64 } else { 0.0 },
        rss_mib_max: max(|s| s.rss_mib),
        rss_anon_mib_total: total(|s| s.rss_anon_mib),
        peak_rss_mib_total: total(|s| s.peak_rss_mib),
        peak_rss_mib_max: max(|s| s.peak_rss_mib),
    }
}

/// What the harness reads off one ByoHost.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HostView {
    pub name: String,
    /// `status.hostinfo.osname` is set: the agent registered the host.
    pub registered: bool,
    /// `status.machineRef.name`: the ByoMachine that claimed it.
    pub machine_ref: Option<String>,
    /// The `byoh.infrastructure.cluster.x-k8s.io/byomachine-name` label (`<namespace>.<name>`).
    pub attached_label: Option<String>,
    /// The `cluster.x-k8s.io/cluster-name` label: the manager only picks hosts without it.
    pub cluster_label: bool,
    /// `K8sNodeBootstrapSucceeded`: None until the agent's first reconcile sets it.
    pub bootstrapped: Option<bool>,
}

impl HostView {
    /// Registered and its agent's controller has run once (it sets the condition): ready for work.
    pub fn ready(&self) -> bool {
        self.registered && self.bootstrapped.is_some()
    }

    /// Nothing claims it: what the manager selects on, and the agent's release clears.
    pub fn free(&self) -> bool {
        !self.cluster_label && self.machine_ref.is_none()
    }
}

/// The ByoMachines whose provisioning is done: `status.ready` (the manager set the Node's
/// providerID) and a host claimed by it whose agent ran the bootstrap data successfully.
pub fn provisioned(ready_machines: &BTreeSet<String>, hosts: &[HostView]) -> BTreeSet<String> {
    hosts.iter().filter(|h| h.bootstrapped == Some(true)).filter_map(|h| h.machine_ref.clone()).filter(|m| ready_machines.contains(m)).collect()
}

/// One change of a host's claim, as the harness's watch saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct Claim {
    pub machine: Option<String>,
    pub bootstrapped: Option<bool>,
}

/// Whether hosts and machines paired one to one (BYOH claims a host with a plain merge patch
/// computed from its cache, so a host another machine has just claimed can be claimed again).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Pairing {
    /// Machines no host points at.
    pub machines_without_host: Vec<String>,
    /// Machines several hosts point at (machine -> hosts).
    pub machines_with_several_hosts: BTreeMap<String, Vec<String>>,
    /// Hosts whose byomachine-name label is not `<namespace>.<machineRef>`.
    pub label_mismatches: Vec<String>,
    /// Hosts that went from one machine straight to another without being released in between
    /// (`h3: m0001 -> m0007 (bootstrapped for m0001 first)`): the second claim overwrote the first.
    pub handovers: Vec<String>,
}

impl Pairing {
    pub fn violations(&self) -> usize {
        self.machines_without_host.len() + self.machines_with_several_hosts.len() + self.label_mismatches.len() + self.handovers.len()
    }
}

/// Checks the hosts' final claims against `machines`, and each host's claim history.
pub fn check_pairing(namespace: &str, machines: &[String], hosts: &[HostView], history: &BTreeMap<String, Vec<Claim>>) -> Pairing {
    let mut hosts_of: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut pairing = Pairing::default();
    for host in hosts {
        if let Some(machine) = &host.machine_ref {
            hosts_of.entry(machine.as_str()).or_default().push(host.name.clone());
        }
        let expected = host.machine_ref.as_ref().map(|m| format!("{namespace}.{m}"));
        if host.attached_label != expected {
            pairing.label_mismatches.push(format!("{}: label {:?}, machineRef {:?}", host.name, host.attached_label, host.machine_ref));
        }
    }
    for machine in machines {
        match hosts_of.get(machine.as_str()) {
            None => pairing.machines_without_host.push(machine.clone()),
            Some(several) if several.len() > 1 => {
                pairing.machines_with_several_hosts.insert(machine.clone(), several.clone());
            }
            Some(_) => {}
        }
    }
    for (host, claims) in history {
        // The last claim and whether the host had bootstrapped while under it.
        let mut current: Option<(&str, bool)> = None;
        for claim in claims {
            match (&claim.machine, current) {
                (Some(next), Some((previous, ran))) if next != previous => {
                    let ran = if ran { format!(" (bootstrapped for {previous} first)") } else { String::new() };
                    pairing.handovers.push(format!("{host}: {previous} -> {next}{ran}"));
                    current = Some((next.as_str(), claim.bootstrapped == Some(true)));
                }
                (Some(next), Some((_, ran))) => current = Some((next.as_str(), ran || claim.bootstrapped == Some(true))),
                (Some(next), None) => current = Some((next.as_str(), claim.bootstrapped == Some(true))),
                (None, _) => current = None,
            }
        }
    }
    pairing
}

/// Appends `claim` to a host's history unless it repeats the last entry.
pub fn record_claim(history: &mut BTreeMap<String, Vec<Claim>>, host: &str, claim: Claim) {
    let claims = history.entry(host.to_string()).or_default();
    if claims.last() != Some(&claim) {
        claims.push(claim);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, machine: Option<&str>, bootstrapped: Option<bool>) -> HostView {
        HostView {
            name: name.into(),
            registered: true,
            machine_ref: machine.map(String::from),
            attached_label: machine.map(|m| format!("bench.{m}")),
            cluster_label: machine.is_some(),
            bootstrapped,
        }
    }

    fn claim(machine: Option<&str>, bootstrapped: Option<bool>) -> Claim {
        Claim { machine: machine.map(String::from), bootstrapped }
    }

    #[test]
    fn one_to_one_is_clean() {
        let hosts = [host("h0", Some("m0"), Some(true)), host("h1", Some("m1"), Some(true))];
        let mut history = BTreeMap::new();
        for h in &hosts {
            record_claim(&mut history, &h.name, claim(None, Some(false)));
            record_claim(&mut history, &h.name, claim(h.machine_ref.as_deref(), Some(false)));
            record_claim(&mut history, &h.name, claim(h.machine_ref.as_deref(), Some(true)));
            record_claim(&mut history, &h.name, claim(h.machine_ref.as_deref(), Some(true)));
        }
        assert_eq!(history["h0"].len(), 3, "repeats are not recorded");
        let pairing = check_pairing("bench", &["m0".into(), "m1".into()], &hosts, &history);
        assert_eq!(pairing.violations(), 0, "{pairing:?}");
    }

    #[test]
    fn a_claim_race_is_reported() {
        // m1 overwrote m0's claim on h0 after h0 ran m0's data; m0 then claimed h1; and h2 points
        // at m1 too, with a label that still names m2.
        let mut h2 = host("h2", Some("m1"), Some(false));
        h2.attached_label = Some("bench.m2".into());
        let hosts = [host("h0", Some("m1"), Some(true)), host("h1", Some("m0"), Some(true)), h2];
        let mut history = BTreeMap::new();
        for c in [claim(None, Some(false)), claim(Some("m0"), Some(false)), claim(Some("m0"), Some(true)), claim(Some("m1"), Some(true))] {
            record_claim(&mut history, "h0", c);
        }
        let pairing = check_pairing("bench", &["m0".into(), "m1".into(), "m2".into()], &hosts, &history);
        assert_eq!(pairing.handovers, vec!["h0: m0 -> m1 (bootstrapped for m0 first)".to_string()]);
        assert_eq!(pairing.machines_without_host, vec!["m2".to_string()]);
        assert_eq!(pairing.machines_with_several_hosts["m1"], vec!["h0".to_string(), "h2".to_string()]);
        assert_eq!(pairing.label_mismatches.len(), 1, "{pairing:?}");
        assert_eq!(pairing.violations(), 4);
    }

    #[test]
    fn a_release_between_claims_is_no_handover() {
        let mut history = BTreeMap::new();
        for c in [claim(Some("m0"), Some(true)), claim(None, Some(false)), claim(Some("m5"), Some(false))] {
            record_claim(&mut history, "h0", c);
        }
        let pairing = check_pairing("bench", &[], &[], &history);
        assert!(pairing.handovers.is_empty(), "{pairing:?}");
    }

    #[test]
    fn provisioned_needs_both_sides() {
        let hosts = [host("h0", Some("m0"), Some(true)), host("h1", Some("m1"), Some(false)), host("h2", Some("m2"), Some(true))];
        let ready: BTreeSet<String> = ["m0", "m1"].into_iter().map(String::from).collect();
        assert_eq!(provisioned(&ready, &hosts), ["m0".to_string()].into_iter().collect());
        assert!(host("h9", None, Some(false)).free() && !hosts[0].free());
        assert!(!HostView { registered: true, ..Default::default() }.ready(), "the agent's controller has not run yet");
    }

    #[test]
    fn agents_summed() {
        let s = |rss, anon, peak| ProcSample { cpu_seconds: 1.0, rss_mib: rss, peak_rss_mib: peak, rss_anon_mib: anon };
        let a = summarize_agents(&[s(30.0, 10.0, 35.0), s(40.0, 12.0, 41.0)]);
        assert_eq!((a.running, a.rss_mib_total, a.rss_mib_mean, a.rss_mib_max), (2, 70.0, 35.0, 40.0));
        assert_eq!((a.rss_anon_mib_total, a.peak_rss_mib_total, a.peak_rss_mib_max), (22.0, 76.0, 41.0));
        assert_eq!(summarize_agents(&[]).rss_mib_mean, 0.0);
    }

    #[test]
    fn requests_split_manager_workload_agents() {
        let agent = host_user("h0");
        let log = format!(
            "{}\n{}\n{}\n",
            r#"{"verb":"list","user":{"username":"byoh-bench-manager"},"objectRef":{"resource":"byohosts"}}"#,
            r#"{"verb":"patch","user":{"username":"byoh-bench-workload"},"objectRef":{"resource":"nodes"}}"#,
            format_args!(r#"{{"verb":"create","user":{{"username":"{agent}","groups":["byoh:hosts"]}},"objectRef":{{"resource":"events"}}}}"#)
        );
        let r = requests_by_who(log.as_bytes());
        assert_eq!((r.manager.total, r.workload.total, r.agents.total), (1, 1, 1));
        assert!(audit_policy().contains("byoh:hosts"));
    }
}
