//! Claiming and releasing a host. The claim is written to the SSHHost's spec with its
//! resourceVersion as a precondition: of two machines claiming one host, exactly one write
//! succeeds; the other gets a conflict and selects again.

use crate::api::GROUP;
use crate::api::v1alpha1::{ConsumerRef, SSHHost};
use kube::api::{Api, PostParams};

#[derive(Debug)]
pub enum ClaimOutcome {
    Claimed(Box<SSHHost>),
    /// Someone else changed the host first (usually another machine claimed it).
    LostRace,
}

pub fn consumer(machine: &str) -> ConsumerRef {
    ConsumerRef { api_group: GROUP.to_string(), kind: "SSHMachine".to_string(), name: machine.to_string() }
}

/// Writes the claim. `host` must be the version the selection was made from.
pub async fn claim(api: &Api<SSHHost>, host: &SSHHost, machine: &str) -> Result<ClaimOutcome, kube::Error> {
    let mut claimed = host.clone();
    claimed.spec.consumer_ref = Some(consumer(machine));
    // `replace` sends metadata.resourceVersion: the API server refuses a stale write with 409.
    match api.replace(host.metadata.name.as_deref().unwrap_or_default(), &PostParams::default(), &claimed).await {
        Ok(host) => Ok(ClaimOutcome::Claimed(Box::new(host))),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(ClaimOutcome::LostRace),
        Err(err) => Err(err),
    }
}

/// Removes the claim of `machine` from the host (no-op when someone else holds it).
pub async fn release(api: &Api<SSHHost>, host_name: &str, machine: &str) -> Result<(), kube::Error> {
    loop {
        let Some(mut host) = api.get_opt(host_name).await? else { return Ok(()) };
        if host.spec.consumer_ref.as_ref().is_none_or(|c| c.name != machine) {
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
