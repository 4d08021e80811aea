//! The SSHHost controller's decisions.

use super::*;
use crate::api::v1alpha1::{Condition, SSHHostSpec, SSHMachineStatus};

fn machine(phase: Option<MachinePhase>, deleting: bool) -> SSHMachine {
    let mut machine = SSHMachine::new("m", Default::default());
    machine.status = Some(SSHMachineStatus { phase, ..Default::default() });
    if deleting {
        machine.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()));
    }
    machine
}

#[test]
fn a_claimed_hosts_phase_follows_its_machine() {
    assert_eq!(claimed_phase(None), HostPhase::Claimed, "consumer not seen yet");
    assert_eq!(claimed_phase(Some(&machine(None, false))), HostPhase::Claimed);
    assert_eq!(claimed_phase(Some(&machine(Some(MachinePhase::WaitingForHost), false))), HostPhase::Claimed);
    assert_eq!(claimed_phase(Some(&machine(Some(MachinePhase::Provisioning), false))), HostPhase::Provisioning);
    assert_eq!(claimed_phase(Some(&machine(Some(MachinePhase::Failed), false))), HostPhase::Provisioning, "touched, not released");
    assert_eq!(claimed_phase(Some(&machine(Some(MachinePhase::Provisioned), false))), HostPhase::Provisioned);
    assert_eq!(claimed_phase(Some(&machine(Some(MachinePhase::Deleting), false))), HostPhase::Releasing);
    assert_eq!(claimed_phase(Some(&machine(Some(MachinePhase::Provisioned), true))), HostPhase::Releasing, "deletion begun");
}

fn probed_host(phase: HostPhase, probed: &str, generation: i64, observed: i64) -> SSHHost {
    let spec = serde_json::from_value::<SSHHostSpec>(serde_json::json!({
        "address": "198.18.1.2",
        "auth": {"privateKeySecretRef": {"name": "k", "key": "ssh-privatekey"}},
        "hostKey": {"publicKeys": ["SHA256:x"]}
    }))
    .unwrap();
    let mut host = SSHHost::new("h", spec);
    host.metadata.generation = Some(generation);
    host.status = Some(SSHHostStatus {
        phase: Some(phase),
        last_probe_time: Some(probed.into()),
        conditions: vec![Condition {
            r#type: "Ready".into(),
            status: ConditionStatus::True,
            observed_generation: Some(observed),
            last_transition_time: probed.into(),
            reason: "Available".into(),
            message: String::new(),
        }],
        ..Default::default()
    });
    host
}

#[test]
fn a_free_host_is_probed_once_per_interval_unless_its_spec_changed() {
    let now: jiff::Timestamp = "2026-01-01T00:10:00Z".parse().unwrap();
    let interval = Duration::from_secs(300);
    let left = next_probe_in(&probed_host(HostPhase::Available, "2026-01-01T00:08:00Z", 1, 1), interval, now);
    assert_eq!(left, Some(Duration::from_secs(180)));
    assert_eq!(next_probe_in(&probed_host(HostPhase::Available, "2026-01-01T00:00:00Z", 1, 1), interval, now), None, "due");
    assert_eq!(next_probe_in(&probed_host(HostPhase::Available, "2026-01-01T00:08:00Z", 2, 1), interval, now), None, "spec changed");
    assert_eq!(
        next_probe_in(&probed_host(HostPhase::Unreachable, "2026-01-01T00:08:00Z", 1, 1), interval, now),
        None,
        "unreachable: retried by its error's backoff"
    );
}
