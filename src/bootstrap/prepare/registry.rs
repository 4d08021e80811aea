//! spec.preparation.registry, rendered for the preparation script (`prepare-registry.sh`):
//! containerd's hosts.toml per mirror, the CA, and the pull credentials as an Authorization
//! header (a secret: redacted, never in the job's identity or the host's stamp).

use super::{PrepareError, check_url, sha256_hex, shown};
use base64::Engine;

/// The registry settings with their Secret and ConfigMap values read (by the controller or the CLI).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RegistryInputs {
    /// `(registry, endpoint)`: images named `<registry>/...` are pulled from `endpoint`.
    pub mirrors: Vec<(String, String)>,
    /// PEM certificates the mirrors' serving certificates chain to.
    pub ca_pem: Option<String>,
    /// `(username, password)`.
    pub credentials: Option<(String, String)>,
    /// Where the credentials came from, for messages ("Secret ns/name").
    pub credentials_source: String,
}

impl std::fmt::Debug for RegistryInputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryInputs")
            .field("mirrors", &self.mirrors)
            .field("ca_pem", &self.ca_pem.as_ref().map(|c| format!("<{} bytes>", c.len())))
            .field("credentials", &self.credentials.as_ref().map(|_| "<redacted>"))
            .field("credentials_source", &self.credentials_source)
            .finish()
    }
}

/// What the script gets: its variables, the values to redact, and what names the work.
#[derive(Default)]
pub(super) struct Rendered {
    mirrors: String,
    ca: String,
    auth: String,
    credentials: String,
    stamp: String,
    pub identity: Vec<String>,
    pub secrets: Vec<String>,
}

impl Rendered {
    pub fn vars(&self) -> [(&'static str, &str); 5] {
        [
            ("REGISTRY_MIRRORS", self.mirrors.as_str()),
            ("REGISTRY_CA", self.ca.as_str()),
            ("REGISTRY_AUTH", self.auth.as_str()),
            ("REGISTRY_CREDENTIALS", self.credentials.as_str()),
            ("REGISTRY_STAMP", self.stamp.as_str()),
        ]
    }
}

pub(super) fn render(inputs: &RegistryInputs) -> Result<Rendered, PrepareError> {
    let invalid = |field: &'static str, reason: String| PrepareError::InvalidSource { field, reason };
    if inputs.mirrors.is_empty() {
        return Err(invalid("spec.preparation.registry.mirrors", "names no mirror".into()));
    }
    let mut lines = Vec::with_capacity(inputs.mirrors.len());
    for (registry, endpoint) in &inputs.mirrors {
        if !valid_registry(registry) {
            return Err(invalid("spec.preparation.registry.mirrors", format!("{:?} is not a registry host[:port]", shown(registry))));
        }
        if lines.iter().any(|line: &String| line.split(' ').next() == Some(registry.as_str())) {
            return Err(invalid("spec.preparation.registry.mirrors", format!("{registry} has two mirrors: give it one")));
        }
        let endpoint = check_url("spec.preparation.registry.mirrors.endpoint", endpoint)?;
        if !super::url_secrets(&endpoint).is_empty() {
            return Err(invalid(
                "spec.preparation.registry.mirrors.endpoint",
                "must not hold credentials (anyone who can read the object sees them): use registry.credentialsSecretRef".into(),
            ));
        }
        lines.push(format!("{registry} {endpoint}"));
    }
    let ca = match &inputs.ca_pem {
        Some(pem) => check_ca(pem)?,
        None => String::new(),
    };
    let mirrors = lines.join("\n");
    let mut rendered = Rendered { stamp: sha256_hex(&format!("{mirrors}\n{ca}")), ..Rendered::default() };
    rendered.identity = vec![format!("registry sha256:{}", rendered.stamp)];
    if let Some((user, password)) = &inputs.credentials {
        if user.is_empty() || user.contains(':') || user.chars().any(char::is_control) || password.chars().any(char::is_control) {
            return Err(invalid(
                "spec.preparation.registry.credentialsSecretRef",
                format!("{} must hold a username without ':' and a password, without control characters", inputs.credentials_source),
            ));
        }
        rendered.auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        rendered.credentials = inputs.credentials_source.clone();
        // Which Secret, not what it holds: a new password reaches hosts prepared from now on.
        rendered.identity.push(format!("credentials {}", inputs.credentials_source));
        rendered.secrets = vec![password.clone(), rendered.auth.clone()];
    }
    rendered.mirrors = mirrors;
    rendered.ca = ca;
    Ok(rendered)
}

/// `host` or `host:port`, lower case, as containerd names the certs.d folder.
fn valid_registry(registry: &str) -> bool {
    let (host, port) = registry.split_once(':').map_or((registry, None), |(h, p)| (h, Some(p)));
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && !host.starts_with(['.', '-'])
        && !host.ends_with(['.', '-']);
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    host_ok && port_ok
}

/// One or more PEM certificates, nothing else (a private key given by mistake is refused).
fn check_ca(pem: &str) -> Result<String, PrepareError> {
    let invalid = |reason: &str| PrepareError::InvalidSource { field: "spec.preparation.registry.caRef", reason: reason.to_string() };
    let pem = pem.replace("\r\n", "\n");
    let pem = pem.trim();
    if pem.contains("PRIVATE KEY") {
        return Err(invalid("holds a private key: give the CA certificate only"));
    }
    if !pem.starts_with("-----BEGIN CERTIFICATE-----") || !pem.ends_with("-----END CERTIFICATE-----") {
        return Err(invalid("must be PEM certificates (-----BEGIN CERTIFICATE----- ... -----END CERTIFICATE-----)"));
    }
    let body_ok = pem.lines().all(|l| l.starts_with("-----") || l.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)));
    if pem.len() > 65536 || !body_ok {
        return Err(invalid("may hold at most 64 KiB of PEM certificates, and nothing between them"));
    }
    Ok(pem.to_string())
}
