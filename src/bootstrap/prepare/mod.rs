//! Host preparation: turn a bare OS into a host kubeadm can use, before the bootstrap runs.
//!
//! [`plan`] turns an SSHMachine's `spec.preparation`, the Machine's version and the host's facts
//! into [`Work`]: for mode None a read-only check whose output [`judge_versions`] reads; for
//! modes Packages and Artifacts one POSIX sh script, run as a host-side job like the bootstrap
//! (so it survives lost connections and never starts twice). The scripts are `lib.sh` (shared
//! functions) plus `packages.sh` or `artifacts.sh`, after the rendered variables. They record
//! what they installed in [`STAMP`]; a host that already holds exactly that, at the right
//! versions, is left alone (the fast path: nothing is rewritten). A script that fails prints a
//! last line `capssh-prepare: <Reason>: <message>` that [`failure`] reads.

use crate::api::v1alpha1::conditions::reasons;
use crate::api::v1alpha1::{HostFacts, Preparation, PreparationMode};
use crate::bootstrap::shell::quote;

#[cfg(test)]
mod tests;

/// What the last successful preparation installed, on the host.
pub const STAMP: &str = "/var/lib/capssh/prepared";
/// The Kubernetes package repository (mode Packages) unless `packages.repositoryURL` says otherwise.
pub const DEFAULT_PACKAGE_REPOSITORY: &str = "https://pkgs.k8s.io";
/// Architectures capssh prepares (Kubernetes' names, as in the SSHHost facts).
pub const ARCHITECTURES: &[&str] = &["amd64", "arm64", "ppc64le", "s390x"];

use crate::bootstrap::scripts::{
    PREPARE_ARTIFACTS as ARTIFACTS, PREPARE_LIB as LIB, PREPARE_PACKAGES as PACKAGES, PREPARE_REGISTRY as REGISTRY, PREPARE_VERIFY as VERIFY,
};

mod registry;
pub use registry::RegistryInputs;

/// Families of operating systems capssh can prepare, from /etc/os-release's ID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OsFamily {
    /// apt: debian, ubuntu.
    Debian,
    /// dnf or yum: rhel, centos, rocky, almalinux, ol, fedora.
    RedHat,
}

impl OsFamily {
    pub fn of(os: &str) -> Option<OsFamily> {
        match os {
            "debian" | "ubuntu" => Some(OsFamily::Debian),
            "rhel" | "centos" | "rocky" | "almalinux" | "ol" | "fedora" => Some(OsFamily::RedHat),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            OsFamily::Debian => "debian",
            OsFamily::RedHat => "redhat",
        }
    }
}

const SUPPORTED_OS: &str = "debian, ubuntu, rhel, centos, rocky, almalinux, ol, fedora";

/// Why a host cannot be prepared, found before anything runs on it, or from what it reported.
#[derive(thiserror::Error, Debug, PartialEq, Eq)]
pub enum PrepareError {
    #[error("the Machine has no spec.version: preparation installs (or checks) that version")]
    MissingVersion,
    #[error("the Machine's spec.version {version:?} is not a Kubernetes version like v1.36.3")]
    InvalidVersion { version: String },
    #[error("host {host} runs {os} {os_version}, which capssh cannot prepare (supported: {SUPPORTED_OS}); pre-bake it and use preparation mode None")]
    UnsupportedOs { host: String, os: String, os_version: String },
    #[error("host {host} has architecture {arch:?}, which capssh cannot prepare (supported: {})", ARCHITECTURES.join(", "))]
    UnsupportedArch { host: String, arch: String },
    #[error("{field}: {reason}")]
    InvalidSource { field: &'static str, reason: String },
    #[error(
        "{tool} on host {host} is {installed}, but the Machine's spec.version is {expected}: install {tool} {expected} on the host, or let capssh install it (preparation mode Artifacts or Packages)"
    )]
    VersionMismatch { host: String, tool: String, installed: String, expected: String },
}

impl PrepareError {
    /// The condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            PrepareError::MissingVersion => reasons::MISSING_VERSION,
            PrepareError::InvalidVersion { .. } => reasons::INVALID_VERSION,
            PrepareError::UnsupportedOs { .. } => reasons::UNSUPPORTED_OS,
            PrepareError::UnsupportedArch { .. } => reasons::UNSUPPORTED_ARCH,
            PrepareError::InvalidSource { .. } => reasons::INVALID_SOURCE,
            PrepareError::VersionMismatch { .. } => reasons::VERSION_MISMATCH,
        }
    }
}

/// What preparing a host takes.
pub enum Work {
    /// Mode None: run this read-only script (not as a job), then [`judge_versions`] its output.
    Verify { script: String },
    /// Modes Packages and Artifacts: a host-side job.
    Job(PrepareJob),
}

/// A preparation job. (Its `Debug` shows no script: the URL may hold credentials.)
pub struct PrepareJob {
    /// A complete `#!/bin/sh` script.
    pub script: String,
    /// What names this work: a job id made from it (with the machine) re-attaches to the same
    /// job, and a different preparation gets a different job.
    pub identity: Vec<String>,
    /// Values to redact from logs and messages (a password in the mirror URL).
    pub secrets: Vec<String>,
}

impl std::fmt::Debug for PrepareJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrepareJob").field("script", &format_args!("<{} bytes>", self.script.len())).finish()
    }
}

/// Plans the preparation of `host` (its facts) for Kubernetes `version` (the Machine's
/// spec.version). Nothing runs; a host or spec capssh cannot serve is an error.
/// `registry`: spec.preparation.registry with its Secrets read; required when it is set.
pub fn plan(
    preparation: &Preparation,
    registry: Option<&RegistryInputs>,
    version: Option<&str>,
    host: &str,
    facts: &HostFacts,
) -> Result<Work, PrepareError> {
    let version = check_version(version)?;
    if preparation.mode == PreparationMode::None {
        return Ok(Work::Verify { script: render(&[("VERSION", version)], &[], VERIFY) });
    }
    let Some(family) = OsFamily::of(&facts.os) else {
        return Err(PrepareError::UnsupportedOs { host: host.into(), os: shown(&facts.os), os_version: shown(&facts.os_version) });
    };
    if !ARCHITECTURES.contains(&facts.arch.as_str()) {
        return Err(PrepareError::UnsupportedArch { host: host.into(), arch: shown(&facts.arch) });
    }
    let mut identity = vec![format!("{:?}", preparation.mode), version.to_string(), facts.arch.clone()];
    let registry = match (&preparation.registry, registry) {
        (None, _) => registry::Rendered::default(),
        (Some(_), None) => {
            return Err(PrepareError::InvalidSource { field: "spec.preparation.registry", reason: "its CA and credentials were not read".into() });
        }
        (Some(_), Some(inputs)) => registry::render(inputs)?,
    };
    identity.extend(registry.identity.iter().cloned());
    let (script, mut secrets) = match preparation.mode {
        PreparationMode::Artifacts => {
            let source = preparation
                .artifacts
                .as_ref()
                .ok_or(PrepareError::InvalidSource { field: "spec.preparation.artifacts", reason: "mode Artifacts needs artifacts.url".into() })?;
            let url = check_url("spec.preparation.artifacts.url", &source.url)?;
            let pin = source.checksums_sha256.clone().unwrap_or_default();
            let pin_ok = pin.is_empty() || (pin.len() == 64 && pin.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
            if !pin_ok {
                return Err(PrepareError::InvalidSource {
                    field: "spec.preparation.artifacts.checksumsSHA256",
                    reason: "must be 64 lower-case hex digits".into(),
                });
            }
            if pin.is_empty() && url.starts_with("http://") {
                return Err(PrepareError::InvalidSource {
                    field: "spec.preparation.artifacts.checksumsSHA256",
                    reason: format!(
                        "the mirror {} is plain http, where anyone on the way can swap SHA256SUMS together with the files it lists: set artifacts.checksumsSHA256 to the SHA-256 of SHA256SUMS that `capssh artifacts build` printed for {version}/{}, or serve the mirror over https://",
                        shown_url(&url),
                        facts.arch
                    ),
                });
            }
            identity.extend([url.clone(), pin.clone()]);
            let vars = [
                ("VERSION", version),
                ("ARCH", facts.arch.as_str()),
                ("OS_FAMILY", family.name()),
                ("MIRROR_URL", url.as_str()),
                ("SUMS_PIN", pin.as_str()),
            ];
            (render(&vars, &registry.vars(), ARTIFACTS), url_secrets(&url))
        }
        PreparationMode::Packages => {
            let packages = preparation.packages.clone().unwrap_or_default();
            let repository = packages.repository_url.as_deref().unwrap_or(DEFAULT_PACKAGE_REPOSITORY);
            let repository = check_url("spec.preparation.packages.repositoryURL", repository)?;
            if !url_secrets(&repository).is_empty() {
                return Err(PrepareError::InvalidSource {
                    field: "spec.preparation.packages.repositoryURL",
                    reason: "must not hold credentials (they would be stored in the host's package sources); configure them on the host, e.g. in /etc/apt/auth.conf.d".into(),
                });
            }
            let runtime = packages.container_runtime_package.clone().unwrap_or_else(|| default_runtime_package(&facts.os).to_string());
            if runtime.is_empty() || !runtime.chars().all(|c| c.is_ascii_alphanumeric() || ".+_-".contains(c)) {
                return Err(PrepareError::InvalidSource {
                    field: "spec.preparation.packages.containerRuntimePackage",
                    reason: format!("{:?} is not a package name", shown(&runtime)),
                });
            }
            let signing_key = packages.signing_key.as_deref().map(check_signing_key).transpose()?;
            if signing_key.is_none() && repository.starts_with("http://") {
                return Err(PrepareError::InvalidSource {
                    field: "spec.preparation.packages.signingKey",
                    reason: format!(
                        "the repository {repository} is plain http, where its signing key (Release.key) could be swapped on the way, and with it every package: set packages.signingKey to the repository's ASCII-armored public key (gpg --armor --export), or use an https:// repository"
                    ),
                });
            }
            identity.extend([repository.clone(), runtime.clone()]);
            // Only when set: the identity (so the job id) of a preparation without a key stays as it was.
            if let Some(key) = &signing_key {
                identity.push(format!("signingKey sha256:{}", sha256_hex(key)));
            }
            let vars = [
                ("VERSION", version),
                ("ARCH", facts.arch.as_str()),
                ("OS_FAMILY", family.name()),
                ("REPOSITORY_URL", repository.as_str()),
                ("RUNTIME_PACKAGE", runtime.as_str()),
                ("SIGNING_KEY", signing_key.as_deref().unwrap_or_default()),
            ];
            (render(&vars, &registry.vars(), PACKAGES), Vec::new())
        }
        PreparationMode::None => unreachable!("mode None returned above"),
    };
    secrets.extend(registry.secrets);
    Ok(Work::Job(PrepareJob { script, identity, secrets }))
}

/// `containerd` where the distribution ships it, Docker's `containerd.io` on the RHEL family.
fn default_runtime_package(os: &str) -> &'static str {
    match OsFamily::of(os) {
        Some(OsFamily::RedHat) if os != "fedora" => "containerd.io",
        _ => "containerd",
    }
}

/// Judges mode None's report ("TOOL PATH VERSION" lines): kubelet and kubeadm must be at the
/// Machine's version (v1.36.3 is matched by v1.36.3 and v1.36.3-x or +x builds).
pub fn judge_versions(report: &str, host: &str, expected: &str) -> Result<(), PrepareError> {
    for tool in ["kubelet", "kubeadm"] {
        let line = report.lines().find_map(|l| l.strip_prefix(tool).and_then(|rest| rest.strip_prefix(' ')));
        let mut fields = line.unwrap_or("- ").splitn(2, ' ');
        let path = fields.next().unwrap_or("-");
        let seen = fields.next().unwrap_or("").trim();
        if !version_matches(seen, expected) {
            let installed = match (path, seen) {
                ("-", _) => "not installed".to_string(),
                (path, "") => format!("at {path} but reports no version"),
                (path, seen) => format!("{} (at {path})", shown(seen)),
            };
            return Err(PrepareError::VersionMismatch { host: host.into(), tool: tool.into(), installed, expected: expected.into() });
        }
    }
    Ok(())
}

fn version_matches(seen: &str, expected: &str) -> bool {
    seen.strip_prefix(expected).is_some_and(|rest| rest.is_empty() || rest.starts_with(['-', '+']))
}

/// The reason and message of a failed preparation job: its last `capssh-prepare: Reason: …` line.
pub fn failure(log: &str) -> Option<(String, String)> {
    log.lines().rev().find_map(|line| {
        let (reason, message) = line.strip_prefix("capssh-prepare: ")?.split_once(": ")?;
        let valid = reason.len() <= 64 && reason.starts_with(|c: char| c.is_ascii_alphabetic()) && reason.chars().all(|c| c.is_ascii_alphanumeric());
        valid.then(|| (reason.to_string(), message.trim().to_string()))
    })
}

/// `vX.Y.Z` with an optional `-pre` or `+build` suffix, safe in a path, a URL and a shell word.
pub fn check_version(version: Option<&str>) -> Result<&str, PrepareError> {
    let version = version.ok_or(PrepareError::MissingVersion)?;
    let invalid = || PrepareError::InvalidVersion { version: shown(version) };
    let rest = version.strip_prefix('v').ok_or_else(invalid)?;
    let (core, suffix) = match rest.find(['-', '+']) {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, "x"),
    };
    let numbers: Vec<&str> = core.split('.').collect();
    let numeric = numbers.len() == 3 && numbers.iter().all(|n| !n.is_empty() && n.len() <= 6 && n.bytes().all(|b| b.is_ascii_digit()));
    let suffix_ok = !suffix.is_empty() && suffix.len() <= 64 && suffix.chars().all(|c| c.is_ascii_alphanumeric() || ".+-".contains(c));
    if numeric && suffix_ok { Ok(version) } else { Err(invalid()) }
}

/// An http(s) URL without query, fragment, spaces or characters that need quoting anywhere;
/// returned without trailing slashes.
fn check_url(field: &'static str, url: &str) -> Result<String, PrepareError> {
    let invalid = |reason: &str| PrepareError::InvalidSource { field, reason: reason.to_string() };
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://")).ok_or_else(|| invalid("must start with http:// or https://"))?;
    if rest.trim_end_matches('/').is_empty() {
        return Err(invalid("names no host"));
    }
    if !url.chars().all(|c| c.is_ascii_graphic() && !"\"'\\<>^`{|}?#".contains(c)) {
        return Err(invalid("may hold only printable ASCII without spaces, quotes, backslashes, <>^`{|}, a query or a fragment"));
    }
    Ok(url.trim_end_matches('/').to_string())
}

const KEY_BEGIN: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----";
const KEY_END: &str = "-----END PGP PUBLIC KEY BLOCK-----";

/// An ASCII-armored OpenPGP public key block (or several), as apt (`signed-by=….asc`) and rpm
/// read it; returned with Unix line ends and one final newline.
fn check_signing_key(key: &str) -> Result<String, PrepareError> {
    let invalid = |reason: &str| PrepareError::InvalidSource { field: "spec.preparation.packages.signingKey", reason: reason.to_string() };
    let key = key.replace("\r\n", "\n");
    let key = key.trim();
    if key.contains("PRIVATE KEY") {
        return Err(invalid(
            "holds a private key: give the repository's public key only (gpg --armor --export); anyone who can read this object sees it",
        ));
    }
    if !key.starts_with(KEY_BEGIN) || !key.ends_with(KEY_END) {
        return Err(invalid(&format!("must be an ASCII-armored OpenPGP public key block, from {KEY_BEGIN} to {KEY_END} (gpg --armor --export)")));
    }
    if key.len() > 65536 || !key.chars().all(|c| c == '\n' || c == '\t' || c.is_ascii_graphic() || c == ' ') {
        return Err(invalid("may hold at most 64 KiB of printable ASCII"));
    }
    Ok(format!("{key}\n"))
}

fn sha256_hex(text: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// A URL as it may appear in a message: without its user info (a password).
fn shown_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_once('/').map(|(a, p)| (a, format!("/{p}"))).unwrap_or((rest, String::new()));
            let host = authority.rsplit_once('@').map(|(_, host)| host).unwrap_or(authority);
            format!("{scheme}://{host}{path}")
        }
        None => url.to_string(),
    }
}

/// The password of a `scheme://user:password@host/...` URL (and the whole user info), to redact.
fn url_secrets(url: &str) -> Vec<String> {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let authority = rest.split('/').next().unwrap_or("");
    match authority.rsplit_once('@') {
        Some((userinfo, _)) => {
            let mut secrets = vec![userinfo.to_string()];
            if let Some((_, password)) = userinfo.split_once(':').filter(|(_, p)| !p.is_empty()) {
                secrets.push(password.to_string());
            }
            secrets
        }
        None => Vec::new(),
    }
}

/// The script: variables, shared functions, the mode's part.
fn render(vars: &[(&str, &str)], registry: &[(&str, &str)], body: &str) -> String {
    let mut script = String::from("#!/bin/sh\n# capssh host preparation (src/bootstrap/prepare).\nset -eu\n");
    for (name, value) in vars.iter().chain(registry) {
        script.push_str(&format!("{name}={}\n", quote(value)));
    }
    script.push_str(LIB);
    if !registry.is_empty() {
        // The modes' scripts call registry_prepare (a no-op without mirrors).
        script.push_str(REGISTRY);
    }
    script.push_str(body);
    script
}

/// A value from a host or a spec, as it may appear in a message: short, one line.
fn shown(value: &str) -> String {
    let mut shown: String = value.chars().filter(|c| !c.is_control()).take(64).collect();
    if value.chars().count() > 64 {
        shown.push('…');
    }
    if shown.is_empty() { "(unknown)".into() } else { shown }
}
