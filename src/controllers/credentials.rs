//! From an SSHHost (and its Secrets) to an SSH target, the same way for every controller.

use super::error::ReconcileError;
use crate::api::MOVE_LABEL;
use crate::api::v1alpha1::{Bastion, HostKeyPolicy as HostKeySpec, SSHAuth, SSHHost};
use crate::ssh::hostkey::HostKeyPolicy;
use crate::ssh::{Credentials, Endpoint, PoolKey, Target};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;

/// The target and the pool's key: the host, and what decides trust in it (it changes whenever
/// any of that changes, and the pool then connects afresh).
pub async fn target_for(client: &kube::Client, host: &SSHHost) -> Result<(Target, PoolKey), ReconcileError> {
    let namespace = host.metadata.namespace.clone().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let spec = &host.spec;
    let mut fingerprint = Vec::new();
    let main = endpoint(&secrets, &namespace, &spec.address, spec.port, &spec.user, &spec.auth, &spec.host_key, &mut fingerprint).await?;
    let bastion = match &spec.bastion {
        Some(Bastion { address, port, user, auth, host_key }) => {
            Some(endpoint(&secrets, &namespace, address, *port, user, auth, host_key, &mut fingerprint).await?)
        }
        None => None,
    };
    let key = PoolKey { host: format!("{namespace}/{}", host.metadata.name.clone().unwrap_or_default()), trust: fingerprint.join("|") };
    Ok((Target { host: main, bastion }, key))
}

#[allow(clippy::too_many_arguments)]
async fn endpoint(
    secrets: &Api<Secret>,
    namespace: &str,
    address: &str,
    port: i32,
    user: &str,
    auth: &SSHAuth,
    host_key: &HostKeySpec,
    fingerprint: &mut Vec<String>,
) -> Result<Endpoint, ReconcileError> {
    let credentials = if let Some(key_ref) = &auth.private_key_secret_ref {
        let (secret, version) = read(secrets, namespace, &key_ref.name).await?;
        fingerprint.push(format!("{}@{version}", key_ref.name));
        let private_key = value(&secret, namespace, &key_ref.name, &key_ref.key)?;
        let passphrase = match &key_ref.passphrase_key {
            Some(k) => Some(value(&secret, namespace, &key_ref.name, k)?),
            None => None,
        };
        Credentials::Key { private_key, passphrase }
    } else if let Some(pw_ref) = &auth.password_secret_ref {
        let (secret, version) = read(secrets, namespace, &pw_ref.name).await?;
        fingerprint.push(format!("{}@{version}", pw_ref.name));
        Credentials::Password(value(&secret, namespace, &pw_ref.name, &pw_ref.key)?)
    } else {
        return Err(ReconcileError::Invalid("spec.auth names no Secret".into()));
    };
    fingerprint.push(format!("{user}@{address}:{port}#{}#{}", host_key.public_keys.join(","), host_key.trust_on_first_use));
    Ok(Endpoint {
        address: address.to_string(),
        port: u16::try_from(port).map_err(|_| ReconcileError::Invalid(format!("port {port} is out of range")))?,
        user: user.to_string(),
        credentials,
        host_keys: HostKeyPolicy::parse(&host_key.public_keys, host_key.trust_on_first_use)?,
    })
}

/// Puts clusterctl's move label on every Secret the host logs in with. `clusterctl move` carries
/// a namespace's Secrets only when something ties them to a Cluster; a host's credentials are
/// tied to no Cluster, so they are labelled to travel with the SSHHosts (whose CRD carries the
/// same label). Otherwise the moved hosts could not be reached from the new management cluster.
pub async fn ensure_move_label(ctx: &super::Context, host: &SSHHost) -> Result<(), ReconcileError> {
    let namespace = host.metadata.namespace.clone().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let auths = std::iter::once(&host.spec.auth).chain(host.spec.bastion.as_ref().map(|b| &b.auth));
    let names = auths.filter_map(|a| a.private_key_secret_ref.as_ref().map(|r| &r.name).or(a.password_secret_ref.as_ref().map(|r| &r.name)));
    for name in names {
        let key = format!("{namespace}/{name}");
        if ctx.move_labelled.lock().map(|seen| seen.contains(&key)).unwrap_or(false) {
            continue;
        }
        // A missing Secret is reported by whoever needs it to connect.
        let Some(secret) = secrets.get_opt(name).await? else { continue };
        if !secret.metadata.labels.as_ref().is_some_and(|l| l.contains_key(MOVE_LABEL)) {
            let patch = serde_json::json!({"metadata": {"labels": {MOVE_LABEL: ""}}});
            secrets.patch(name, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch)).await?;
        }
        if let Ok(mut seen) = ctx.move_labelled.lock() {
            seen.insert(key);
        }
    }
    Ok(())
}

async fn read(secrets: &Api<Secret>, namespace: &str, name: &str) -> Result<(Secret, String), ReconcileError> {
    let secret =
        secrets.get_opt(name).await?.ok_or_else(|| ReconcileError::MissingSecret { namespace: namespace.to_string(), name: name.to_string() })?;
    let version = secret.metadata.resource_version.clone().unwrap_or_default();
    Ok((secret, version))
}

fn value(secret: &Secret, namespace: &str, name: &str, key: &str) -> Result<String, ReconcileError> {
    let problem = |problem: String| ReconcileError::Secret { namespace: namespace.to_string(), name: name.to_string(), problem };
    let bytes = secret.data.as_ref().and_then(|d| d.get(key)).ok_or_else(|| problem(format!("has no key {key:?}")))?;
    String::from_utf8(bytes.0.clone()).map_err(|_| problem(format!("key {key:?} is not UTF-8 text")))
}
