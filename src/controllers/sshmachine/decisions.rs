//! The SSHMachine controller's decisions as pure functions of what it observed: no API server,
//! no host. Each has unit tests (`make unit`).

use super::DELETE_FOR_MOVE_ANNOTATION;
use crate::controllers::capi::{is_externally_managed, is_paused};
use crate::hosts::work::Resetting;
use kube::api::DynamicObject;
use std::time::Duration;

/// What the entry of a reconcile decides before anything else.
#[derive(Debug, PartialEq, Eq)]
pub enum Entry {
    /// Not ours to act on: managed by someone else, or a source copy being handed over by
    /// `clusterctl move` (a hand-over, never a reason to touch a host).
    LeaveAlone,
    /// The Cluster or the object is paused: no host is touched, the delete path included.
    Paused,
    Proceed,
}

pub fn entry(meta: &kube::core::ObjectMeta, cluster: Option<&DynamicObject>) -> Entry {
    let moving = meta.annotations.as_ref().is_some_and(|a| a.contains_key(DELETE_FOR_MOVE_ANNOTATION));
    if is_externally_managed(meta) || moving {
        Entry::LeaveAlone
    } else if is_paused(cluster, meta) {
        Entry::Paused
    } else {
        Entry::Proceed
    }
}

/// Whether a running bootstrap has run past spec.bootstrapTimeoutSeconds, by its age on the
/// host (the host's clock, read from the job's own record: it survives restarts and moves).
pub fn bootstrap_overdue(age: Option<Duration>, limit_seconds: Option<i32>) -> bool {
    match (age, limit_seconds) {
        (Some(age), Some(limit)) => age.as_secs() > u64::try_from(limit).unwrap_or(0),
        _ => false,
    }
}

/// Whether a machine read again from the API server (after its bootstrap Secret was found
/// missing) is on its way out: gone, or deleted. The reconcile then ran on a stale copy (the
/// deletion removes the Secret with the machine), and failing it would only report the deletion
/// as bad data.
pub fn going_away(fresh: Option<&kube::core::ObjectMeta>) -> bool {
    fresh.is_none_or(|meta| meta.deletion_timestamp.is_some())
}

/// What to do with a deleted machine's host after a reset step.
#[derive(Debug, PartialEq, Eq)]
pub enum AfterReset {
    /// The reset job still runs, within the give-up time: look again soon.
    Wait,
    /// Verified clean: release the claim.
    Release,
    /// Unreachable or dirty, still within the give-up time: try again.
    Retry(String),
    /// Unreachable, dirty or still resetting for too long: keep the claim, mark the host, let
    /// the Machine go.
    Quarantine(String),
}

/// `step`: the reset step's result (an error is the problem, worded for a person).
pub fn after_reset(step: Result<Resetting, String>, deleting_for: Duration, give_up: Duration) -> AfterReset {
    let problem = match step {
        Ok(Resetting::Running) if deleting_for < give_up => return AfterReset::Wait,
        // A reset that hangs (a hung mount, a wedged runtime) is given up like any other failure.
        // The clock is the deletion's age, not the job's: say so.
        Ok(Resetting::Running) => {
            format!("the reset still runs {}s after the machine was deleted (a hung mount or process?)", deleting_for.as_secs())
        }
        Ok(Resetting::Clean) => return AfterReset::Release,
        Ok(Resetting::Dirty(problem)) | Err(problem) => problem,
    };
    if deleting_for < give_up { AfterReset::Retry(problem) } else { AfterReset::Quarantine(problem) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::ObjectMeta;
    use std::collections::BTreeMap;

    fn meta(annotations: &[&str]) -> ObjectMeta {
        ObjectMeta { annotations: Some(annotations.iter().map(|a| (a.to_string(), String::new())).collect::<BTreeMap<_, _>>()), ..Default::default() }
    }

    fn cluster(paused: bool) -> DynamicObject {
        let mut cluster = DynamicObject::new("c", &crate::controllers::capi::cluster_resource());
        cluster.data = serde_json::json!({"spec": {"paused": paused}});
        cluster
    }

    #[test]
    fn a_move_hand_over_and_external_management_leave_the_host_alone() {
        assert_eq!(entry(&meta(&[DELETE_FOR_MOVE_ANNOTATION]), None), Entry::LeaveAlone);
        assert_eq!(entry(&meta(&["cluster.x-k8s.io/managed-by"]), None), Entry::LeaveAlone);
        // A paused Cluster being moved: still left alone (the hand-over deletes it).
        assert_eq!(entry(&meta(&[DELETE_FOR_MOVE_ANNOTATION]), Some(&cluster(true))), Entry::LeaveAlone);
    }

    #[test]
    fn pause_comes_from_the_cluster_or_the_object() {
        assert_eq!(entry(&meta(&[]), Some(&cluster(true))), Entry::Paused);
        assert_eq!(entry(&meta(&["cluster.x-k8s.io/paused"]), Some(&cluster(false))), Entry::Paused);
        assert_eq!(entry(&meta(&[]), Some(&cluster(false))), Entry::Proceed);
        assert_eq!(entry(&meta(&[]), None), Entry::Proceed);
    }

    #[test]
    fn a_missing_secret_of_a_machine_on_its_way_out_is_no_failure() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        assert!(going_away(None), "gone meanwhile");
        let deleted = ObjectMeta { deletion_timestamp: Some(Time(jiff::Timestamp::now())), ..Default::default() };
        assert!(going_away(Some(&deleted)));
        assert!(!going_away(Some(&ObjectMeta::default())), "alive: its Secret really is missing");
    }

    #[test]
    fn the_bootstrap_clock_is_the_jobs_age_on_the_host() {
        assert!(!bootstrap_overdue(Some(Duration::from_secs(100)), None), "no limit, never overdue");
        assert!(!bootstrap_overdue(None, Some(30)), "not started: no age");
        assert!(!bootstrap_overdue(Some(Duration::from_secs(30)), Some(30)));
        assert!(bootstrap_overdue(Some(Duration::from_secs(31)), Some(30)));
    }

    #[test]
    fn a_host_is_released_only_when_verified_clean_and_quarantined_only_after_the_give_up_time() {
        let give_up = Duration::from_secs(300);
        let early = Duration::from_secs(10);
        let late = Duration::from_secs(301);
        assert_eq!(after_reset(Ok(Resetting::Running), early, give_up), AfterReset::Wait);
        assert!(
            matches!(after_reset(Ok(Resetting::Running), late, give_up), AfterReset::Quarantine(p) if p.contains("still runs 301s after the machine was deleted")),
            "a hung reset is given up"
        );
        assert_eq!(after_reset(Ok(Resetting::Clean), early, give_up), AfterReset::Release);
        assert_eq!(after_reset(Ok(Resetting::Dirty("kubelet-running".into())), early, give_up), AfterReset::Retry("kubelet-running".into()));
        assert_eq!(after_reset(Err("unreachable".into()), early, give_up), AfterReset::Retry("unreachable".into()));
        assert_eq!(after_reset(Ok(Resetting::Dirty("x".into())), late, give_up), AfterReset::Quarantine("x".into()));
        assert_eq!(after_reset(Err("unreachable".into()), late, give_up), AfterReset::Quarantine("unreachable".into()));
    }
}
