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
    let left = next_probe_in(&probed_host(HostPhase::Available, "2026-01-01T00:08:00Z", 1, 1), interval, now, None);
    assert_eq!(left, Some(Duration::from_secs(180)));
    assert_eq!(next_probe_in(&probed_host(HostPhase::Available, "2026-01-01T00:00:00Z", 1, 1), interval, now, None), None, "due");
    assert_eq!(next_probe_in(&probed_host(HostPhase::Available, "2026-01-01T00:08:00Z", 2, 1), interval, now, None), None, "spec changed");
    assert_eq!(
        next_probe_in(&probed_host(HostPhase::Unreachable, "2026-01-01T00:08:00Z", 1, 1), interval, now, None),
        None,
        "unreachable: retried by its error's backoff"
    );
}

#[test]
fn a_probe_that_wrote_nothing_still_counts_for_the_interval() {
    let now: jiff::Timestamp = "2026-01-01T01:00:00Z".parse().unwrap();
    let interval = Duration::from_secs(300);
    // The status last changed an hour ago; this manager probed the host a minute ago.
    let host = probed_host(HostPhase::Available, "2026-01-01T00:00:00Z", 1, 1);
    let here = Some("2026-01-01T00:59:00Z".parse().unwrap());
    assert_eq!(next_probe_in(&host, interval, now, here), Some(Duration::from_secs(240)));
    assert_eq!(next_probe_in(&host, interval, now, None), None, "a manager that never probed it probes it now");
    let older = Some("2025-12-31T23:00:00Z".parse().unwrap());
    assert_eq!(next_probe_in(&probed_host(HostPhase::Available, "2026-01-01T00:58:00Z", 1, 1), interval, now, older), Some(Duration::from_secs(180)));
}

#[test]
fn a_probe_that_finds_nothing_new_writes_no_new_probe_time() {
    let now: jiff::Timestamp = "2026-01-01T01:00:00Z".parse().unwrap();
    let previous = probed_host(HostPhase::Available, "2026-01-01T00:00:00Z", 1, 1).status.unwrap();
    assert_eq!(probe_time_to_write(Some(&previous), &previous.clone(), now).as_deref(), Some("2026-01-01T00:00:00Z"), "unchanged");
    let mut changed = previous.clone();
    changed.observed_host_key_fingerprint = Some("SHA256:new".into());
    assert_eq!(probe_time_to_write(Some(&previous), &changed, now).as_deref(), Some("2026-01-01T01:00:00Z"), "something new");
    let mut first = previous.clone();
    first.last_probe_time = None;
    assert_eq!(probe_time_to_write(Some(&first), &first.clone(), now).as_deref(), Some("2026-01-01T01:00:00Z"), "never probed");
    assert_eq!(probe_time_to_write(None, &previous, now).as_deref(), Some("2026-01-01T01:00:00Z"), "no status yet");
}

#[test]
fn the_owner_record_scripts_output_is_read() {
    assert_eq!(parse_owner_record("owner=new\n"), Ok(OwnerRecord::Ours));
    assert_eq!(parse_owner_record("owner=same\nrecorded_namespace=n\nrecorded_name=h\nrecorded_uid=u\n"), Ok(OwnerRecord::Ours));
    assert_eq!(
        parse_owner_record("owner=moved\nrecorded_namespace=n\nrecorded_name=h\nrecorded_uid=old\n"),
        Ok(OwnerRecord::Moved { previous_uid: "old".into() })
    );
    assert_eq!(
        parse_owner_record("owner=other\nrecorded_namespace=n\nrecorded_name=first\nrecorded_uid=u1\n"),
        Ok(OwnerRecord::Other { namespace: "n".into(), name: "first".into(), uid: "u1".into() })
    );
    assert!(parse_owner_record("").is_err(), "no verdict is an error, never a pass");
}

/// Runs the real owner-record script with `sh`, its record in `file`, as (namespace, name, uid).
fn record(file: &std::path::Path, owner: (&str, &str, &str)) -> OwnerRecord {
    let file = file.to_str().unwrap();
    let inputs = [("OWNER_FILE", file), ("OWNER_NAMESPACE", owner.0), ("OWNER_NAME", owner.1), ("OWNER_UID", owner.2)];
    let out = std::process::Command::new("sh").args(["-c", &with_inputs(OWNER_RECORD, &inputs)]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    parse_owner_record(&String::from_utf8_lossy(&out.stdout)).unwrap()
}

#[test]
fn the_box_records_its_sshhost_once_follows_a_move_and_refuses_another() {
    let dir = std::env::temp_dir().join(format!("capssh-owner-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let file = dir.join("capssh/owner");
    assert_eq!(record(&file, ("ns", "h0", "uid-1")), OwnerRecord::Ours, "first probe: written");
    let written = std::fs::read_to_string(&file).unwrap();
    assert_eq!(written, "namespace=ns\nname=h0\nuid=uid-1\n");
    let mtime = std::fs::metadata(&file).unwrap().modified().unwrap();
    assert_eq!(record(&file, ("ns", "h0", "uid-1")), OwnerRecord::Ours);
    assert_eq!(std::fs::metadata(&file).unwrap().modified().unwrap(), mtime, "written once, not at every probe");

    // clusterctl move: same namespace and name, new uid; the record follows.
    assert_eq!(record(&file, ("ns", "h0", "uid-2")), OwnerRecord::Moved { previous_uid: "uid-1".into() });
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "namespace=ns\nname=h0\nuid=uid-2\n");

    // Another SSHHost for the same box: refused, and the record is left as it was.
    assert_eq!(record(&file, ("ns", "h1", "uid-3")), OwnerRecord::Other { namespace: "ns".into(), name: "h0".into(), uid: "uid-2".into() });
    assert_eq!(
        record(&file, ("other-ns", "h0", "uid-4")),
        OwnerRecord::Other { namespace: "ns".into(), name: "h0".into(), uid: "uid-2".into() },
        "the same name in another namespace is another SSHHost"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "namespace=ns\nname=h0\nuid=uid-2\n");
    let leftovers: Vec<_> = std::fs::read_dir(dir.join("capssh")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from("owner")], "no temporary file is left behind");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Runs the real owner-release script with `sh` for the SSHHost of `uid`.
fn release(file: &std::path::Path, uid: &str) -> OwnerRelease {
    let inputs = [("OWNER_FILE", file.to_str().unwrap()), ("OWNER_UID", uid)];
    let out = std::process::Command::new("sh").args(["-c", &with_inputs(OWNER_RELEASE, &inputs)]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    parse_owner_release(&String::from_utf8_lossy(&out.stdout)).unwrap()
}

#[test]
fn a_deleted_sshhost_removes_only_its_own_record() {
    let dir = std::env::temp_dir().join(format!("capssh-owner-release-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let file = dir.join("capssh/owner");
    assert_eq!(release(&file, "uid-1"), OwnerRelease::Absent, "never recorded: nothing to do");
    record(&file, ("ns", "h0", "uid-1"));
    // The same name again after a move records a new uid: the old copy's deletion keeps it.
    record(&file, ("ns", "h0", "uid-2"));
    assert_eq!(release(&file, "uid-1"), OwnerRelease::Other);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "namespace=ns\nname=h0\nuid=uid-2\n");
    assert_eq!(release(&file, "uid-2"), OwnerRelease::Removed);
    assert!(!file.exists());
    assert_eq!(record(&file, ("other-ns", "h9", "uid-3")), OwnerRecord::Ours, "the box can be registered again, anywhere");
    assert!(parse_owner_release("").is_err(), "no verdict is an error, never a pass");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_duplicate_is_told_which_sshhost_has_the_box_and_how_to_fix_it() {
    let host = probed_host(HostPhase::Available, "2026-01-01T00:08:00Z", 1, 1);
    let message = duplicate_message(&host, "ns", "h0", "uid-1");
    assert!(message.contains("198.18.1.2") && message.contains("SSHHost ns/h0") && message.contains("uid-1"), "{message}");
    assert!(message.contains("Delete one of the two SSHHosts") && message.contains("remove /var/lib/capssh/owner"), "{message}");
    assert!(duplicate_message(&host, "", "", "").contains("unreadable owner record"));
}
