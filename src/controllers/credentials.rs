//! From an SSHHost (and its Secrets) to an SSH target, the same way for every controller.
//!
//! Only Secrets labelled [`CREDENTIALS_LABEL`]`: "true"` are used: an SSHHost names a Secret and
//! an address, and capssh hands the Secret's value to whatever answers there, so a Secret must
//! be meant for capssh by whoever can write it, not merely be in the namespace.

use super::error::ReconcileError;
use crate::api::MOVE_LABEL;
use crate::api::v1alpha1::{Bastion, CREDENTIALS_LABEL, HostKeyPolicy as HostKeySpec, SSHAuth, SSHHost};
use crate::ssh::hostkey::HostKeyPolicy;
use crate::ssh::{Credentials, Endpoint, PoolKey, Target};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use std::sync::Arc;

/// Where credential Secrets are read from.
#[derive(Clone, Copy)]
enum Source<'a> {
    /// The controllers' watch cache of Secrets marked for capssh (a GET on a miss).
    Cached(&'a super::Context),
    /// The API server.
    Direct(&'a kube::Client),
}

impl Source<'_> {
    async fn secret(self, namespace: &str, name: &str) -> Result<Option<Arc<Secret>>, kube::Error> {
        match self {
            Source::Cached(ctx) => ctx.caches.credentials(&ctx.client, namespace, name).await,
            Source::Direct(client) => Ok(Api::<Secret>::namespaced(client.clone(), namespace).get_opt(name).await?.map(Arc::new)),
        }
    }
}

/// The target and the pool's key: the host, and what decides trust in it (it changes whenever
/// any of that changes, and the pool then connects afresh). Secrets are read from the API server.
pub async fn target_for(client: &kube::Client, host: &SSHHost) -> Result<(Target, PoolKey), ReconcileError> {
    resolve(Source::Direct(client), host).await
}

/// [`target_for`] with the Secrets from the controllers' watch cache.
pub async fn cached_target_for(ctx: &super::Context, host: &SSHHost) -> Result<(Target, PoolKey), ReconcileError> {
    resolve(Source::Cached(ctx), host).await
}

async fn resolve(secrets: Source<'_>, host: &SSHHost) -> Result<(Target, PoolKey), ReconcileError> {
    let namespace = host.metadata.namespace.clone().unwrap_or_default();
    let spec = &host.spec;
    let mut fingerprint = Vec::new();
    let main = endpoint(secrets, &namespace, &spec.address, spec.port, &spec.user, &spec.auth, &spec.host_key, &mut fingerprint).await?;
    let bastion = match &spec.bastion {
        Some(Bastion { address, port, user, auth, host_key }) => {
            Some(endpoint(secrets, &namespace, address, *port, user, auth, host_key, &mut fingerprint).await?)
        }
        None => None,
    };
    let key = PoolKey { host: PoolKey::host_of(&namespace, host.metadata.name.as_deref().unwrap_or_default()), trust: fingerprint.join("|") };
    Ok((Target { host: main, bastion }, key))
}

#[allow(clippy::too_many_arguments)]
async fn endpoint(
    secrets: Source<'_>,
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
/// A Secret not marked for capssh is left untouched: the probe reports it, and capssh must not
/// make an unrelated Secret travel.
pub async fn ensure_move_label(ctx: &super::Context, host: &SSHHost) -> Result<(), ReconcileError> {
    let namespace = host.metadata.namespace.clone().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let source = Source::Cached(ctx);
    let auths = std::iter::once(&host.spec.auth).chain(host.spec.bastion.as_ref().map(|b| &b.auth));
    let names = auths.filter_map(|a| a.private_key_secret_ref.as_ref().map(|r| &r.name).or(a.password_secret_ref.as_ref().map(|r| &r.name)));
    for name in names {
        let key = format!("{namespace}/{name}");
        if ctx.move_labelled.lock().map(|seen| seen.contains(&key)).unwrap_or(false) {
            continue;
        }
        // A missing Secret is reported by whoever needs it to connect.
        let Some(secret) = source.secret(&namespace, name).await? else { continue };
        if !marked_for_capssh(&secret) {
            continue;
        }
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

/// Values of one Secret marked for capssh (see [`marked_for_capssh`]), e.g. a registry's pull
/// credentials: capssh hands them to a host, so the Secret must be meant for that. Read once,
/// from the controllers' watch cache.
pub async fn marked_secret_values<const N: usize>(
    ctx: &super::Context,
    namespace: &str,
    name: &str,
    keys: [&str; N],
) -> Result<[String; N], ReconcileError> {
    let (secret, _) = read(Source::Cached(ctx), namespace, name).await?;
    let mut values = [const { String::new() }; N];
    for (slot, key) in values.iter_mut().zip(keys) {
        *slot = value(&secret, namespace, name, key)?;
    }
    Ok(values)
}

/// Reads a credential Secret, refusing one not marked for capssh before any value is read.
async fn read(secrets: Source<'_>, namespace: &str, name: &str) -> Result<(Arc<Secret>, String), ReconcileError> {
    let secret = secrets
        .secret(namespace, name)
        .await?
        .ok_or_else(|| ReconcileError::MissingSecret { namespace: namespace.to_string(), name: name.to_string() })?;
    if !marked_for_capssh(&secret) {
        return Err(ReconcileError::Secret { namespace: namespace.to_string(), name: name.to_string(), problem: unmarked_problem(namespace, name) });
    }
    let version = secret.metadata.resource_version.clone().unwrap_or_default();
    Ok((secret, version))
}

fn value(secret: &Secret, namespace: &str, name: &str, key: &str) -> Result<String, ReconcileError> {
    let problem = |problem: String| ReconcileError::Secret { namespace: namespace.to_string(), name: name.to_string(), problem };
    let bytes = secret.data.as_ref().and_then(|d| d.get(key)).ok_or_else(|| problem(format!("has no key {key:?}")))?;
    String::from_utf8(bytes.0.clone()).map_err(|_| problem(format!("key {key:?} is not UTF-8 text")))
}

/// Whether the Secret carries [`CREDENTIALS_LABEL`]` = "true"`.
pub fn marked_for_capssh(secret: &Secret) -> bool {
    secret.metadata.labels.as_ref().and_then(|l| l.get(CREDENTIALS_LABEL)).is_some_and(|v| v == "true")
}

/// What a person must do to let capssh use the Secret, worded for the condition.
fn unmarked_problem(namespace: &str, name: &str) -> String {
    format!(
        "is not marked for capssh, so it is not used: if it holds this host's credentials, label it \
         {CREDENTIALS_LABEL}=true (kubectl label secret -n {namespace} {name} {CREDENTIALS_LABEL}=true)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(labels: &[(&str, &str)]) -> Secret {
        let mut secret = Secret::default();
        secret.metadata.labels = Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        secret
    }

    #[test]
    fn only_secrets_labelled_for_capssh_are_credentials() {
        assert!(marked_for_capssh(&secret(&[(CREDENTIALS_LABEL, "true")])));
        assert!(!marked_for_capssh(&secret(&[])), "an unlabelled Secret");
        assert!(!marked_for_capssh(&secret(&[(CREDENTIALS_LABEL, "false")])));
        assert!(!marked_for_capssh(&secret(&[(CREDENTIALS_LABEL, "")])));
        assert!(!marked_for_capssh(&secret(&[(crate::api::MOVE_LABEL, "")])), "clusterctl's move label is not consent");
        assert!(!marked_for_capssh(&Secret::default()));
    }

    /// What capssh does with Secrets: list and watch through label selectors (the caches of
    /// credentials and bootstrap data), get by name on a cache miss, and patch to add
    /// clusterctl's move label. Never update, create or delete.
    const SECRET_VERBS: &[&str] = &["get", "list", "patch", "watch"];

    #[test]
    fn config_rbac_grants_on_secrets_only_what_capssh_does_with_them() {
        use k8s_openapi::api::rbac::v1::{ClusterRole, Role};
        let cluster_role: ClusterRole = serde_saphyr::from_str(include_str!("../../config/rbac/role.yaml")).unwrap();
        let lease_role: Role = serde_saphyr::from_str(include_str!("../../config/rbac/leader_election_role.yaml")).unwrap();
        let rules = cluster_role.rules.unwrap_or_default().into_iter().chain(lease_role.rules.unwrap_or_default());
        let mut granted: Vec<String> = rules
            .filter(|r| r.api_groups.as_ref().is_some_and(|g| g.iter().any(|g| g.is_empty() || g == "*")))
            .filter(|r| r.resources.as_ref().is_some_and(|res| res.iter().any(|res| res == "secrets" || res == "*")))
            .flat_map(|r| r.verbs)
            .collect();
        granted.sort();
        granted.dedup();
        assert_eq!(granted, SECRET_VERBS, "config/rbac grants on Secrets must be exactly what the code does with them");
    }

    #[test]
    fn the_refusal_says_what_to_add() {
        let err = ReconcileError::Secret { namespace: "ns".into(), name: "key".into(), problem: unmarked_problem("ns", "key") };
        let message = err.to_string();
        assert!(message.starts_with("Secret ns/key: is not marked for capssh"), "{message}");
        assert!(message.contains("kubectl label secret -n ns key infrastructure.cluster.x-k8s.io/capssh-credentials=true"), "{message}");
        assert_eq!(err.connection_reason(), "CredentialsUnavailable");
    }
}
