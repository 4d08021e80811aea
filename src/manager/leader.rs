//! Leader election on a coordination.k8s.io Lease: of several replicas, only the holder of the
//! Lease runs controllers. A replica that cannot renew in time stops (and is restarted), so two
//! replicas never reconcile at once for longer than the lease allows.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use std::time::Duration;

pub struct LeaderElection {
    api: Api<Lease>,
    name: String,
    identity: String,
    lease_duration: Duration,
    renew_every: Duration,
    /// The Lease's resourceVersion as last seen, and when (by this process's monotonic clock).
    /// Another holder's lease expires when it has not changed for its duration as *we* measure
    /// it: its renewTime is the other Pod's clock, which may be minutes off ours.
    observed: std::sync::Mutex<Option<(String, std::time::Instant)>>,
}

/// Whether another holder's lease may be taken: unchanged for longer than its duration since
/// we first saw this version of it.
fn expired(unchanged_for: Duration, lease_duration_seconds: Option<i32>) -> bool {
    match lease_duration_seconds {
        Some(seconds) => unchanged_for > Duration::from_secs(u64::try_from(seconds).unwrap_or(0)),
        None => true,
    }
}

/// How long the next renewal may take, `since_renewal` after the last one: until another
/// replica could find the lease expired, less one renewal period of margin (its clock and ours
/// start apart). None: too late, the lease may already be another's.
fn renewal_budget(since_renewal: Duration, lease_duration: Duration, renew_every: Duration) -> Option<Duration> {
    lease_duration.saturating_sub(renew_every).checked_sub(since_renewal).filter(|left| !left.is_zero())
}

impl LeaderElection {
    pub fn new(client: kube::Client, namespace: &str, name: &str, identity: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
            observed: std::sync::Mutex::new(None),
        }
    }

    /// Returns once this replica holds the Lease.
    pub async fn acquire(&self) {
        loop {
            // An attempt that is never answered is given up and made again.
            match tokio::time::timeout(self.lease_duration, self.try_acquire_or_renew()).await {
                Ok(Ok(true)) => {
                    tracing::info!(lease = %self.name, identity = %self.identity, "became the leader");
                    return;
                }
                Ok(Ok(false)) => {}
                Ok(Err(err)) => tracing::warn!(error = %err, "leader election"),
                Err(_) => tracing::warn!(lease = %self.name, "leader election: the API server did not answer in time"),
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    /// Renews the Lease until it cannot; then returns an error (the manager exits). Each renewal
    /// is bounded by what is left of the lease: a request that is never answered (an API server
    /// gone with the connection still open) must not keep this replica reconciling after another
    /// one took the lease.
    pub async fn hold(&self) -> anyhow::Result<()> {
        let mut last_renewal = tokio::time::Instant::now();
        let mut wait = self.renew_every;
        loop {
            tokio::time::sleep(wait).await;
            let Some(budget) = renewal_budget(last_renewal.elapsed(), self.lease_duration, self.renew_every) else {
                anyhow::bail!("could not renew the lease {} in time", self.name);
            };
            let renewed = match tokio::time::timeout(budget, self.try_acquire_or_renew()).await {
                Ok(renewed) => renewed,
                Err(_) => anyhow::bail!("renewing the lease {} took longer than the lease allows ({budget:?})", self.name),
            };
            match renewed {
                Ok(true) => {
                    last_renewal = tokio::time::Instant::now();
                    wait = self.renew_every;
                }
                Ok(false) => anyhow::bail!("lost the lease {} to another replica", self.name),
                Err(err) => {
                    // The API server may be back any moment (a restart): ask again soon, so a
                    // short outage does not cost the lease. The budget above ends the retries.
                    tracing::warn!(error = %err, "could not renew the lease; retrying");
                    wait = std::time::Duration::from_secs(1);
                }
            }
        }
    }

    /// Gives the Lease up when this replica holds it (at shutdown, once its controllers stopped):
    /// the next replica takes it at once instead of waiting out the lease. Best effort: a
    /// replica that cannot say so lets the lease expire.
    pub async fn release(&self) {
        let released = async {
            let Some(mut lease) = self.api.get_opt(&self.name).await? else { return Ok(false) };
            let Some(spec) = lease.spec.as_mut().filter(|s| s.holder_identity.as_deref() == Some(self.identity.as_str())) else {
                return Ok(false);
            };
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
            // replace() carries resourceVersion: a lease another replica took meanwhile stays theirs.
            self.api.replace(&self.name, &PostParams::default(), &lease).await.map(|_| true)
        };
        match tokio::time::timeout(self.renew_every, released).await {
            Ok(Ok(true)) => tracing::info!(lease = %self.name, identity = %self.identity, "gave up the leadership"),
            Ok(Ok(false)) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, lease = %self.name, "could not give up the lease; it expires by itself"),
            Err(_) => tracing::warn!(lease = %self.name, "giving up the lease took too long; it expires by itself"),
        }
    }

    /// One round: take a free or expired lease, renew our own. True when we hold it.
    async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = jiff::Timestamp::now();
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease { metadata: ObjectMeta { name: Some(self.name.clone()), ..Default::default() }, spec: Some(self.spec(now, None, 0)) };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(err) => Err(err),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let ours = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        let version = lease.metadata.resource_version.clone().unwrap_or_default();
        let unchanged_for = {
            let mut observed = self.observed.lock().unwrap_or_else(|e| e.into_inner());
            match observed.as_ref() {
                Some((seen, since)) if *seen == version => since.elapsed(),
                _ => {
                    *observed = Some((version, std::time::Instant::now()));
                    Duration::ZERO
                }
            }
        };
        let free = spec.holder_identity.as_deref().is_none_or(str::is_empty);
        if !ours && !free && !expired(unchanged_for, spec.lease_duration_seconds) {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
        let acquired = if ours { spec.acquire_time } else { None };
        lease.spec = Some(self.spec(now, acquired, transitions));
        // replace() carries resourceVersion: of two replicas taking an expired lease, one wins.
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(err) => Err(err),
        }
    }

    fn spec(&self, now: jiff::Timestamp, acquired: Option<MicroTime>, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.lease_duration.as_secs() as i32),
            acquire_time: acquired.or(Some(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renewal_may_take_only_what_is_left_of_the_lease() {
        let (lease, every) = (Duration::from_secs(15), Duration::from_secs(5));
        assert_eq!(renewal_budget(Duration::from_secs(5), lease, every), Some(Duration::from_secs(5)), "on schedule");
        assert_eq!(renewal_budget(Duration::from_secs(9), lease, every), Some(Duration::from_secs(1)), "after failed retries");
        assert_eq!(renewal_budget(Duration::from_secs(10), lease, every), None, "another replica may take it in 5 s: stop");
        assert_eq!(renewal_budget(Duration::from_secs(60), lease, every), None);
    }

    #[test]
    fn another_holders_lease_expires_by_our_own_clock() {
        assert!(!expired(Duration::from_secs(14), Some(15)), "renewed (changed) recently as we saw it");
        assert!(expired(Duration::from_secs(16), Some(15)));
        assert!(expired(Duration::ZERO, None), "a lease without a duration is free");
    }
}
