//! Choosing a host for a machine. Pure: decided from an in-memory view of the SSHHosts, so the
//! API server is only written to for the claim itself.

use super::claim::MachineIdentity;
use crate::api::v1alpha1::{HostPhase, LabelSelector, LabelSelectorOperator, SSHHost};
use std::borrow::Borrow;
use std::collections::{BTreeMap, HashSet, hash_map::DefaultHasher};
use std::hash::{Hash, Hasher};

/// Why a host was not chosen, in the order they are reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Skip {
    Claimed,
    Maintenance,
    BeingDeleted,
    Quarantined,
    NotPinned,
    Unreachable,
    DidNotAnswer,
    NotReady,
    LabelsDoNotMatch,
    OtherFailureDomain,
}

impl Skip {
    fn describe(self) -> &'static str {
        match self {
            Skip::Claimed => "claimed",
            Skip::Maintenance => "in maintenance",
            Skip::BeingDeleted => "being deleted",
            Skip::Quarantined => "quarantined",
            Skip::NotPinned => "host key not pinned yet",
            Skip::Unreachable => "unreachable",
            Skip::DidNotAnswer => "did not answer a connection just now",
            Skip::NotReady => "not probed or not ready yet",
            Skip::LabelsDoNotMatch => "labels do not match",
            Skip::OtherFailureDomain => "in another failure domain",
        }
    }
}

/// The outcome of a selection: the host to claim (if any) and a count of every reason.
#[derive(Debug)]
pub struct Selection<'a> {
    pub chosen: Option<&'a SSHHost>,
    pub total: usize,
    pub skipped: BTreeMap<Skip, usize>,
}

impl Selection<'_> {
    /// "0 of 12 hosts free: 7 claimed, 2 in maintenance, 1 unreachable, 2 labels do not match".
    pub fn explain(&self) -> String {
        let free = usize::from(self.chosen.is_some());
        let reasons: Vec<String> = self.skipped.iter().map(|(skip, n)| format!("{n} {}", skip.describe())).collect();
        if reasons.is_empty() {
            format!("{free} of {} hosts free", self.total)
        } else {
            format!("{free} of {} hosts free: {}", self.total, reasons.join(", "))
        }
    }
}

/// A required failure domain: the hosts' label key and the value it must have.
#[derive(Clone, Copy, Debug)]
pub struct FailureDomainRequirement<'a> {
    pub label: &'a str,
    pub value: &'a str,
}

/// Picks a host for `machine`. A host already claimed by this machine is returned first (the
/// claim survived a crash), unless it is quarantined. Otherwise, among the eligible hosts, the
/// choice is spread by rendezvous hashing on (machine, host): machines that select at the same
/// moment rarely race for the same host, and a machine asks for the same host again after a
/// lost race only if it is still free. Hosts named in `did_not_answer` are skipped (see
/// `hosts::unanswered`).
pub fn select<'a, H: Borrow<SSHHost>>(
    hosts: &'a [H],
    machine: &MachineIdentity<'_>,
    selector: &LabelSelector,
    failure_domain: Option<FailureDomainRequirement<'_>>,
    did_not_answer: &HashSet<String>,
) -> Selection<'a> {
    let mut skipped = BTreeMap::new();
    let mut best: Option<(u64, &SSHHost)> = None;
    for host in hosts {
        let host: &SSHHost = host.borrow();
        if machine.holds(host) && !quarantined(host) {
            return Selection { chosen: Some(host), total: hosts.len(), skipped: BTreeMap::new() };
        }
        let silent = did_not_answer.contains(host.metadata.name.as_deref().unwrap_or_default());
        match skip_reason(host, selector, failure_domain).or(silent.then_some(Skip::DidNotAnswer)) {
            Some(reason) => *skipped.entry(reason).or_insert(0) += 1,
            None => {
                let score = rendezvous(machine.name, host.metadata.name.as_deref().unwrap_or_default());
                if best.is_none_or(|(top, _)| score > top) {
                    best = Some((score, host));
                }
            }
        }
    }
    Selection { chosen: best.map(|(_, host)| host), total: hosts.len(), skipped }
}

fn skip_reason(host: &SSHHost, selector: &LabelSelector, fd: Option<FailureDomainRequirement<'_>>) -> Option<Skip> {
    let labels = host.metadata.labels.clone().unwrap_or_default();
    if host.spec.consumer_ref.is_some() {
        return Some(Skip::Claimed);
    }
    if host.spec.maintenance {
        return Some(Skip::Maintenance);
    }
    if host.metadata.deletion_timestamp.is_some() {
        return Some(Skip::BeingDeleted);
    }
    if quarantined(host) {
        return Some(Skip::Quarantined);
    }
    // Work runs only over pinned keys; a host with trust on first use is pinned by its first probe.
    if host.spec.host_key.public_keys.is_empty() {
        return Some(Skip::NotPinned);
    }
    match host.status.as_ref().and_then(|s| s.phase) {
        Some(HostPhase::Available) => {}
        Some(HostPhase::Quarantined) => return Some(Skip::Quarantined),
        Some(HostPhase::Unreachable) => return Some(Skip::Unreachable),
        // Claimed/Provisioning/... without a consumer: a release is still being recorded.
        _ => return Some(Skip::NotReady),
    }
    if !matches(selector, &labels) {
        return Some(Skip::LabelsDoNotMatch);
    }
    if let Some(fd) = fd
        && labels.get(fd.label).map(String::as_str) != Some(fd.value)
    {
        return Some(Skip::OtherFailureDomain);
    }
    None
}

/// Kept out of the pool until a person clears the mark, whoever claimed it.
pub fn quarantined(host: &SSHHost) -> bool {
    host.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(crate::controllers::QUARANTINE_ANNOTATION))
}

/// metav1.LabelSelector semantics: every requirement must hold; an empty selector matches all.
pub fn matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    selector.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
        && selector.match_expressions.iter().all(|req| {
            let value = labels.get(&req.key);
            match req.operator {
                LabelSelectorOperator::In => value.is_some_and(|v| req.values.contains(v)),
                LabelSelectorOperator::NotIn => value.is_none_or(|v| !req.values.contains(v)),
                LabelSelectorOperator::Exists => value.is_some(),
                LabelSelectorOperator::DoesNotExist => value.is_none(),
            }
        })
}

fn rendezvous(machine: &str, host: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    (machine, host).hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::v1alpha1::{HostKeyPolicy, LabelSelectorRequirement, PrivateKeyRef, SSHAuth, SSHHostSpec, SSHHostStatus};

    fn host(name: &str, labels: &[(&str, &str)], phase: Option<HostPhase>) -> SSHHost {
        let mut host = SSHHost::new(
            name,
            SSHHostSpec {
                address: "198.18.1.2".into(),
                port: 22,
                user: "root".into(),
                auth: SSHAuth {
                    private_key_secret_ref: Some(PrivateKeyRef { name: "k".into(), key: "ssh-privatekey".into(), passphrase_key: None }),
                    password_secret_ref: None,
                },
                host_key: HostKeyPolicy { public_keys: vec!["SHA256:x".into()], trust_on_first_use: false },
                bastion: None,
                maintenance: false,
                consumer_ref: None,
            },
        );
        host.metadata.labels = Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        host.status = Some(SSHHostStatus { phase, ..Default::default() });
        host
    }

    fn claimed_by(mut h: SSHHost, machine: &str) -> SSHHost {
        h.spec.consumer_ref = Some(crate::hosts::claim::consumer(machine, None));
        h
    }

    fn id(name: &str) -> MachineIdentity<'_> {
        MachineIdentity { name, uid: None, host_ref: None }
    }

    fn role(value: &str) -> LabelSelector {
        LabelSelector { match_labels: [("role".to_string(), value.to_string())].into(), match_expressions: vec![] }
    }

    #[test]
    fn explains_every_skipped_host() {
        let mut maintenance = host("m", &[("role", "worker")], Some(HostPhase::Available));
        maintenance.spec.maintenance = true;
        let hosts = vec![
            claimed_by(host("c1", &[("role", "worker")], Some(HostPhase::Provisioned)), "other"),
            claimed_by(host("c2", &[("role", "worker")], Some(HostPhase::Provisioned)), "other2"),
            maintenance,
            host("u", &[("role", "worker")], Some(HostPhase::Unreachable)),
            host("q", &[("role", "worker")], Some(HostPhase::Quarantined)),
            host("cp", &[("role", "control-plane")], Some(HostPhase::Available)),
            host("new", &[("role", "worker")], None),
        ];
        let selection = select(&hosts, &id("machine-a"), &role("worker"), None, &HashSet::new());
        assert!(selection.chosen.is_none());
        assert_eq!(
            selection.explain(),
            "0 of 7 hosts free: 2 claimed, 1 in maintenance, 1 quarantined, 1 unreachable, 1 not probed or not ready yet, 1 labels do not match"
        );
    }

    #[test]
    fn a_host_already_claimed_by_the_machine_wins() {
        let hosts = vec![host("free", &[], Some(HostPhase::Available)), claimed_by(host("mine", &[], Some(HostPhase::Provisioning)), "machine-a")];
        let chosen = select(&hosts, &id("machine-a"), &LabelSelector::default(), None, &HashSet::new()).chosen.unwrap();
        assert_eq!(chosen.metadata.name.as_deref(), Some("mine"));
    }

    #[test]
    fn a_quarantined_host_is_not_handed_back_even_to_its_claimant() {
        let mut quarantined = claimed_by(host("q", &[], Some(HostPhase::Quarantined)), "machine-a");
        quarantined.metadata.annotations = Some([(crate::controllers::QUARANTINE_ANNOTATION.to_string(), "dirty".to_string())].into());
        let hosts = vec![quarantined];
        let selection = select(&hosts, &id("machine-a"), &LabelSelector::default(), None, &HashSet::new());
        assert!(selection.chosen.is_none());
        assert_eq!(selection.explain(), "0 of 1 hosts free: 1 claimed");
    }

    #[test]
    fn a_host_that_did_not_answer_just_now_is_passed_over() {
        let hosts: Vec<SSHHost> = (0..3).map(|i| host(&format!("h{i}"), &[], Some(HostPhase::Available))).collect();
        let first = select(&hosts, &id("m"), &LabelSelector::default(), None, &HashSet::new()).chosen.unwrap().metadata.name.clone().unwrap();
        let silent: HashSet<String> = [first.clone()].into();
        let selection = select(&hosts, &id("m"), &LabelSelector::default(), None, &silent);
        assert_ne!(selection.chosen.unwrap().metadata.name.as_deref(), Some(first.as_str()));
        assert_eq!(selection.explain(), "1 of 3 hosts free: 1 did not answer a connection just now");
        let all: HashSet<String> = hosts.iter().map(|h| h.metadata.name.clone().unwrap()).collect();
        let none = select(&hosts, &id("m"), &LabelSelector::default(), None, &all);
        assert!(none.chosen.is_none());
        // A claim that survived a crash is still returned: the machine's own host is not chosen again.
        let mine = vec![claimed_by(host("mine", &[], Some(HostPhase::Provisioning)), "m")];
        let silent_mine: HashSet<String> = ["mine".to_string()].into();
        assert!(select(&mine, &id("m"), &LabelSelector::default(), None, &silent_mine).chosen.is_some());
    }

    #[test]
    fn failure_domains_are_honoured() {
        let hosts = vec![host("a1", &[("zone", "a")], Some(HostPhase::Available)), host("b1", &[("zone", "b")], Some(HostPhase::Available))];
        let fd = FailureDomainRequirement { label: "zone", value: "b" };
        let selection = select(&hosts, &id("m"), &LabelSelector::default(), Some(fd), &HashSet::new());
        assert_eq!(selection.chosen.unwrap().metadata.name.as_deref(), Some("b1"));
        assert_eq!(selection.explain(), "1 of 2 hosts free: 1 in another failure domain");
    }

    #[test]
    fn concurrent_machines_spread_over_free_hosts() {
        let hosts: Vec<SSHHost> = (0..10).map(|i| host(&format!("h{i}"), &[], Some(HostPhase::Available))).collect();
        let picks: std::collections::BTreeSet<String> = (0..10)
            .map(|m| {
                select(&hosts, &id(&format!("machine-{m}")), &LabelSelector::default(), None, &HashSet::new())
                    .chosen
                    .unwrap()
                    .metadata
                    .name
                    .clone()
                    .unwrap()
            })
            .collect();
        // Not all on one host: ten machines starting together mostly do not collide.
        assert!(picks.len() >= 4, "{picks:?}");
        // Deterministic for one machine.
        let again = select(&hosts, &id("machine-3"), &LabelSelector::default(), None, &HashSet::new()).chosen.unwrap();
        let first = select(&hosts, &id("machine-3"), &LabelSelector::default(), None, &HashSet::new()).chosen.unwrap();
        assert_eq!(again.metadata.name, first.metadata.name);
    }

    #[test]
    fn set_based_requirements() {
        let labels: BTreeMap<String, String> = [("role".into(), "worker".into()), ("gpu".into(), "a100".into())].into();
        let req = |key: &str, operator, values: &[&str]| LabelSelector {
            match_labels: Default::default(),
            match_expressions: vec![LabelSelectorRequirement { key: key.into(), operator, values: values.iter().map(|v| v.to_string()).collect() }],
        };
        assert!(matches(&req("gpu", LabelSelectorOperator::In, &["a100", "h100"]), &labels));
        assert!(!matches(&req("gpu", LabelSelectorOperator::NotIn, &["a100"]), &labels));
        assert!(matches(&req("zone", LabelSelectorOperator::NotIn, &["a"]), &labels));
        assert!(matches(&req("role", LabelSelectorOperator::Exists, &[]), &labels));
        assert!(!matches(&req("role", LabelSelectorOperator::DoesNotExist, &[]), &labels));
        assert!(matches(&LabelSelector::default(), &labels));
    }
}
