//! Claiming and releasing a host. The claim is written to the SSHHost's spec with its
//! resourceVersion as a precondition: of two machines claiming one host, exactly one write
//! succeeds; the other gets a conflict and selects again.

use crate::api::GROUP;
use crate::api::v1alpha1::{ConsumerRef, SSHHost, SSHMachine};
use kube::api::{Api, PostParams};

#[derive(Debug)]
pub enum ClaimOutcome {
    Claimed(Box<SSHHost>),
    /// Someone else changed the host first (usually another machine claimed it).
    LostRace,
}

/// Who a machine is, as far as claims go.
#[derive(Clone, Copy, Debug)]
pub struct MachineIdentity<'a> {
    pub name: &'a str,
    pub uid: Option<&'a str>,
    /// spec.hostRef: set once at claim time, carried over by `clusterctl move`.
    pub host_ref: Option<&'a str>,
}

impl<'a> MachineIdentity<'a> {
    pub fn of(machine: &'a SSHMachine) -> Self {
        Self {
            name: machine.metadata.name.as_deref().unwrap_or_default(),
            uid: machine.metadata.uid.as_deref(),
            host_ref: machine.spec.host_ref.as_ref().map(|r| r.name.as_str()),
        }
    }

    /// Whether `host`'s claim is this machine's. Same name is not enough: a machine recreated
    /// with the name of one whose host was quarantined must not get that host (and its records)
    /// back. The UID decides; a different UID is the same machine only when its spec.hostRef
    /// names the host (a copy made by `clusterctl move`). A claim recorded before UIDs were
    /// (capssh 0.2) is matched by name.
    pub fn holds(&self, host: &SSHHost) -> bool {
        let Some(consumer) = &host.spec.consumer_ref else { return false };
        if consumer.name != self.name || consumer.kind != "SSHMachine" {
            return false;
        }
        match (consumer.uid.as_deref(), self.uid) {
            (None, _) => true,
            (Some(held), Some(uid)) if held == uid => true,
            _ => self.host_ref.is_some() && self.host_ref == host.metadata.name.as_deref(),
        }
    }
}

/// The host among `hosts` whose claim carries this machine's UID, for a machine that has no
/// spec.hostRef: the claim is written first, the hostRef second, and a manager stopped between
/// the two leaves a claim only the UID can tie back to its machine. By UID alone, never by
/// name: a machine recreated with the same name must not release another machine's host.
pub fn claimed_without_record<'h>(hosts: &'h [SSHHost], machine: &MachineIdentity<'_>) -> Option<&'h SSHHost> {
    let uid = machine.uid?;
    hosts.iter().find(|host| {
        host.spec.consumer_ref.as_ref().is_some_and(|c| c.kind == "SSHMachine" && c.name == machine.name && c.uid.as_deref() == Some(uid))
    })
}

pub fn consumer(machine: &str, uid: Option<&str>) -> ConsumerRef {
    ConsumerRef { api_group: GROUP.to_string(), kind: "SSHMachine".to_string(), name: machine.to_string(), uid: uid.map(str::to_string) }
}

/// Writes the claim. `host` must be the version the selection was made from.
pub async fn claim(api: &Api<SSHHost>, host: &SSHHost, machine: &MachineIdentity<'_>) -> Result<ClaimOutcome, kube::Error> {
    let mut claimed = host.clone();
    claimed.spec.consumer_ref = Some(consumer(machine.name, machine.uid));
    // `replace` sends metadata.resourceVersion: the API server refuses a stale write with 409.
    match api.replace(host.metadata.name.as_deref().unwrap_or_default(), &PostParams::default(), &claimed).await {
        Ok(host) => Ok(ClaimOutcome::Claimed(Box::new(host))),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(ClaimOutcome::LostRace),
        Err(err) => Err(err),
    }
}

/// Removes the claim of `machine` from the host (no-op when someone else holds it).
pub async fn release(api: &Api<SSHHost>, host_name: &str, machine: &MachineIdentity<'_>) -> Result<(), kube::Error> {
    loop {
        let Some(mut host) = api.get_opt(host_name).await? else { return Ok(()) };
        if !machine.holds(&host) {
            return Ok(());
        }
        host.spec.consumer_ref = None;
        match api.replace(host_name, &PostParams::default(), &host).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(err) => return Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(consumer: Option<ConsumerRef>) -> SSHHost {
        let mut host: SSHHost = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "h0", "namespace": "ns"},
            "spec": {"address": "198.18.1.2", "auth": {"privateKeySecretRef": {"name": "k", "key": "ssh-privatekey"}}, "hostKey": {"publicKeys": ["SHA256:x"]}}
        }))
        .unwrap();
        host.spec.consumer_ref = consumer;
        host
    }

    #[test]
    fn a_machine_recreated_with_the_same_name_does_not_get_the_host_back() {
        let claimed = host(Some(consumer("m1", Some("uid-1"))));
        assert!(MachineIdentity { name: "m1", uid: Some("uid-1"), host_ref: None }.holds(&claimed));
        assert!(!MachineIdentity { name: "m1", uid: Some("uid-2"), host_ref: None }.holds(&claimed), "recreated: another consumer");
        assert!(!MachineIdentity { name: "m2", uid: Some("uid-1"), host_ref: None }.holds(&claimed));
    }

    #[test]
    fn a_moved_copy_proves_itself_by_its_host_ref() {
        let claimed = host(Some(consumer("m1", Some("uid-source"))));
        let copy = MachineIdentity { name: "m1", uid: Some("uid-target"), host_ref: Some("h0") };
        assert!(copy.holds(&claimed), "the claim is left as it is: spec moves unchanged");
        assert!(!MachineIdentity { host_ref: Some("h9"), ..copy }.holds(&claimed));
    }

    #[test]
    fn a_claim_left_without_a_host_ref_is_found_by_uid_only() {
        let hosts = vec![host(Some(consumer("m1", Some("uid-1")))), host(Some(consumer("m2", None))), host(None)];
        let machine = MachineIdentity { name: "m1", uid: Some("uid-1"), host_ref: None };
        assert!(claimed_without_record(&hosts, &machine).is_some());
        assert!(claimed_without_record(&hosts, &MachineIdentity { uid: Some("uid-2"), ..machine }).is_none(), "recreated: not its claim");
        assert!(claimed_without_record(&hosts, &MachineIdentity { name: "m2", uid: Some("any"), host_ref: None }).is_none(), "no UID, no match");
        assert!(claimed_without_record(&hosts, &MachineIdentity { uid: None, ..machine }).is_none());
    }

    #[test]
    fn a_claim_from_before_uids_is_matched_by_name() {
        let legacy = host(Some(consumer("m1", None)));
        assert!(MachineIdentity { name: "m1", uid: Some("any"), host_ref: None }.holds(&legacy));
        assert!(!MachineIdentity { name: "m1", uid: None, host_ref: None }.holds(&host(None)));
    }
}
