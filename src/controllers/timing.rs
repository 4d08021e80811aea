//! Timing policy, in one place: how often capssh looks again, and how long it waits before
//! giving up. The manager's flags set the configurable part ([`Timing`]); the rest are
//! constants because nobody has needed to change them.

use std::time::Duration;

/// The configurable intervals (manager flags).
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// How often a free host is probed again (`--probe-interval-seconds`).
    pub probe_interval: Duration,
    /// How often a provisioned machine's host is checked, to keep Ready current
    /// (`--health-check-interval-seconds`).
    pub health_interval: Duration,
    /// How long a deleted machine's host may stay unreachable or dirty before it is
    /// quarantined (`--cleanup-give-up-seconds`).
    pub cleanup_give_up: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self { probe_interval: Duration::from_secs(300), health_interval: Duration::from_secs(60), cleanup_give_up: Duration::from_secs(300) }
    }
}

/// A running bootstrap (or reset) job is looked at again after at most this; a young one sooner
/// ([`job_poll`]).
pub const BOOTSTRAP_POLL: Duration = Duration::from_secs(3);
/// The first look at a job that has just started.
pub const FIRST_JOB_POLL: Duration = Duration::from_millis(500);
/// A running preparation job is looked at again after this.
pub const PREPARE_POLL: Duration = Duration::from_secs(5);
/// A reset that failed, or a host that could not be reached to reset it, is tried again after
/// this (until `Timing::cleanup_give_up`).
pub const RESET_RETRY: Duration = Duration::from_secs(15);
/// A lost claim race: other hosts may still be free, so choose again soon. (A second lost race
/// writes the same status, so no watch event would wake the machine before this.)
pub const CLAIM_RETRY: Duration = Duration::from_secs(1);
/// A chosen host must accept a TCP connection within this before it is claimed: two SYNs (the
/// second is sent after 1 s), each given a second. A host that answers but slowly is passed
/// over for now, not lost.
pub const CHOSEN_HOST_ANSWER: Duration = Duration::from_secs(2);
/// A chosen host did not answer: every machine now passes it over, so choose again at once.
pub const UNANSWERED_RETRY: Duration = Duration::from_millis(100);
/// No host free: a host being released wakes the machine; this is the fallback.
pub const NO_HOST_RETRY: Duration = Duration::from_secs(30);
/// Invalid bootstrap data: its correction wakes the machine when the cache selects its Secret
/// (see `controllers::caches`); otherwise the machine looks again after this.
pub const INVALID_DATA_RETRY: Duration = Duration::from_secs(60);
/// Mode None with a host at another version: checked again after this.
pub const VERSION_RECHECK: Duration = Duration::from_secs(60);
/// A preparation capssh refuses (spec, Machine or host facts): the watch on the object brings
/// the machine back when the spec changes; the host's facts only with this.
pub const REFUSED_PREPARATION_RECHECK: Duration = Duration::from_secs(120);
/// A failed job is never run again by itself; its machine is looked at now and then.
pub const FAILED_JOB_RECHECK: Duration = Duration::from_secs(300);
/// A bootstrap past spec.bootstrapTimeoutSeconds is left running and looked at again after this.
pub const TIMED_OUT_RECHECK: Duration = Duration::from_secs(60);
/// A provisioned host that does not answer its health check within this does not answer.
pub const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// A deleted SSHHost waiting for its machine to release it is woken by the release itself (it
/// edits the host); this is only the fallback.
pub const RELEASE_RECHECK: Duration = Duration::from_secs(60);
/// SSHCluster: hosts come and go; their failure-domain labels are read again after this.
pub const CLUSTER_RESYNC: Duration = Duration::from_secs(60);

/// A host that does not answer is tried again after 15 s, then 30 s, 60 s, … up to this: a rack
/// gone dark is not hammered, and the hosts that answer get the connections.
pub const UNREACHABLE_BACKOFF_MAX: Duration = Duration::from_secs(300);

/// When to look at a running job again, by its age (None: started by this reconcile): half its
/// age, from [`FIRST_JOB_POLL`] up to [`BOOTSTRAP_POLL`]. A short job is seen done soon after it
/// ends instead of up to 3 s later; a long one (kubeadm) costs a few more polls in its first
/// seconds only.
pub fn job_poll(age: Option<Duration>) -> Duration {
    (age.unwrap_or_default() / 2).clamp(FIRST_JOB_POLL, BOOTSTRAP_POLL)
}

/// The wait before the `failures`-th retry (1 = the first) of a host that does not answer.
pub fn unreachable_backoff(failures: u32) -> Duration {
    use backon::BackoffBuilder;
    let mut delays = backon::ExponentialBuilder::new()
        .with_min_delay(errors::TRANSIENT_SSH)
        .with_max_delay(UNREACHABLE_BACKOFF_MAX)
        .with_factor(2.0)
        .without_max_times()
        .build();
    delays.nth(failures.saturating_sub(1) as usize).unwrap_or(UNREACHABLE_BACKOFF_MAX)
}

/// Consecutive failures to reach each object's host, for [`unreachable_backoff`].
#[derive(Default)]
pub struct Failures(std::sync::Mutex<std::collections::HashMap<String, u32>>);

impl Failures {
    /// Counts one more failure of `object`'s host; the wait before trying it again.
    pub fn record(&self, object: &str) -> Duration {
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(object.to_string()).or_insert(0);
        *count = count.saturating_add(1);
        unreachable_backoff(*count)
    }

    /// The host answered: the next failure starts from the shortest wait again.
    pub fn clear(&self, object: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(object);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_young_job_is_looked_at_soon_and_an_old_one_every_three_seconds() {
        let ms = |age: Option<u64>| job_poll(age.map(Duration::from_millis)).as_millis();
        assert_eq!(ms(None), 500, "just started");
        assert_eq!(ms(Some(200)), 500);
        assert_eq!(ms(Some(2_000)), 1_000);
        assert_eq!(ms(Some(5_000)), 2_500);
        assert_eq!(ms(Some(6_000)), 3_000);
        assert_eq!(ms(Some(600_000)), 3_000, "never slower than the old fixed poll");
    }

    #[test]
    fn an_unreachable_host_is_retried_less_and_less_often_up_to_a_cap() {
        let waits: Vec<u64> = (1..=7).map(|n| unreachable_backoff(n).as_secs()).collect();
        assert_eq!(waits, vec![15, 30, 60, 120, 240, 300, 300]);
        let failures = Failures::default();
        assert_eq!(failures.record("ns/m1"), Duration::from_secs(15));
        assert_eq!(failures.record("ns/m1"), Duration::from_secs(30));
        assert_eq!(failures.record("ns/m2"), Duration::from_secs(15), "per object");
        failures.clear("ns/m1");
        assert_eq!(failures.record("ns/m1"), Duration::from_secs(15));
    }
}

/// Requeues after an error (see `ReconcileError::requeue_after`).
pub mod errors {
    use std::time::Duration;
    /// Conflicts and API hiccups: soon.
    pub const API: Duration = Duration::from_secs(2);
    /// The object changed under the reconcile: at once, from its new version.
    pub const STALE: Duration = Duration::from_secs(1);
    /// The host may answer again by itself.
    pub const TRANSIENT_SSH: Duration = Duration::from_secs(15);
    /// Often only not yet: objects applied together, or moved by clusterctl, arrive in any order.
    pub const MISSING_SECRET: Duration = Duration::from_secs(10);
    /// A person has to change something (a Secret, a pin, sudoers): check back slowly; the
    /// watch on the object brings it back at once when they edit it.
    pub const NEEDS_A_PERSON: Duration = Duration::from_secs(120);
}
