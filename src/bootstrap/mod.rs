//! What runs on a host: Cluster API bootstrap data (cloud-config or ignition) turned into one
//! host-side job script, after rendering `## template: jinja` documents with the machine's
//! metadata. Anything the data asks for that capssh cannot do exactly is refused as a whole,
//! before anything runs on the host.
//!
//! [`plan`] reads the data (`cloudinit`, `ignition`), renders templates (`jinja`), and writes
//! one POSIX sh script (`script`, `users`, `shell`). The script does what cloud-init would do,
//! in cloud-init's module order: bootcmd, write_files, users, deferred write_files, runcmd.
//! Every step before runcmd must succeed (the first failure ends the job with status 1 and a
//! `[capssh] …` line); runcmd is cloud-init's runcmd script, unchanged except for a status line
//! after each command, and its exit status is the job's.

mod cloudinit;
mod ignition;
pub use ignition::percent_decode;
mod jinja;
pub mod prepare;
mod script;
pub mod scripts;
mod shell;
mod systemd;
mod users;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

/// The Cluster API sentinel: CABPK's kubeadm command creates it only when kubeadm succeeded
/// (bootstrap-config contract). A bootstrap job succeeded when it exited 0 and this exists.
pub const SENTINEL: &str = "/run/cluster-api/bootstrap-success.complete";

/// The largest bootstrap data capssh reads (and the largest it renders from a template). A
/// Kubernetes Secret holds at most 1 MiB, so this leaves room without letting a stray file be
/// parsed whole.
pub const MAX_DATA_BYTES: usize = 4 << 20;
/// The largest content one file may decode to (after base64 and gzip). Decompression stops one
/// byte past it, so a gzip bomb costs at most this much memory.
pub const MAX_FILE_BYTES: usize = 16 << 20;
/// The largest content all files of one bootstrap document may decode to together.
pub const MAX_TOTAL_FILE_BYTES: usize = 64 << 20;

/// Per-machine values for `## template: jinja` documents (cloud-init's `ds.meta_data` / `v1`
/// namespaces). `{{ ds.meta_data.X }}` and `{{ v1.X }}` both read `values[X]`.
#[derive(Clone, Debug, Default)]
pub struct MachineMetadata {
    pub values: BTreeMap<String, String>,
}

/// The bootstrap Secret's `format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    CloudConfig,
    Ignition,
}

impl Format {
    /// `None` or `cloud-config` is cloud-config, `ignition` is ignition; anything else is refused.
    pub fn from_secret(format: Option<&str>) -> Result<Format, BootstrapError> {
        match format {
            None | Some("cloud-config") => Ok(Format::CloudConfig),
            Some("ignition") => Ok(Format::Ignition),
            Some(other) => Err(BootstrapError::InvalidFormat { format: shown(other) }),
        }
    }
}

/// A job ready to upload: one POSIX sh script that does everything the data asks for.
/// (Its `Debug` shows sizes only: the script and the secrets hold secret content.)
pub struct HostJob {
    /// A complete `#!/bin/sh` script.
    pub script: String,
    /// Values to redact from anything shown to people: every file content under
    /// /etc/kubernetes/pki/ or holding a private key, password hashes, and every token,
    /// certificate key or password found in the data or in any decoded file.
    pub secrets: Vec<String>,
}

impl std::fmt::Debug for HostJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostJob")
            .field("script", &format_args!("<{} bytes>", self.script.len()))
            .field("secrets", &format_args!("<{} values>", self.secrets.len()))
            .finish()
    }
}

/// Why bootstrap data cannot be run. Messages say what to change; they never quote file
/// contents, commands or parser output, which may hold secrets.
#[derive(thiserror::Error, Debug)]
pub enum BootstrapError {
    #[error("bootstrap data format `{format}` is not supported by capssh (supported: cloud-config, ignition)")]
    InvalidFormat { format: String },
    #[error("bootstrap data is not UTF-8 text")]
    NotUtf8,
    #[error(
        "cloud-config bootstrap data must start with `#cloud-config`, after an optional `## template: jinja` line \
         (capssh does not run shell scripts, MIME multipart or compressed user data)"
    )]
    MissingHeader,
    #[error("bootstrap data is not valid YAML (line {line}, column {column}); the parser's message is not shown because it may quote secret content")]
    Yaml { line: u64, column: u64 },
    #[error(
        "bootstrap data goes past the YAML parser's limits on aliases, nesting or total size (line {line}, column {column}); \
         CABPK writes no anchors or aliases, so remove them"
    )]
    YamlLimits { line: u64, column: u64 },
    #[error("ignition bootstrap data is not valid JSON ({category} at line {line}, column {column})")]
    Json { line: usize, column: usize, category: &'static str },
    #[error("{format} key `{key}` is not supported by capssh; {remedy}")]
    UnsupportedKey { format: &'static str, key: String, remedy: &'static str },
    #[error("{format} `{key}`: {reason}")]
    InvalidValue { format: &'static str, key: String, reason: String },
    #[error(
        "unknown template variable `{name}` on line {line} of the `## template: jinja` bootstrap data; \
         capssh knows ds.meta_data.X and v1.X for X in: {known}"
    )]
    UnknownTemplateVariable { name: String, line: usize, known: String },
    #[error(
        "unsupported template construct `{construct}` on line {line} of the `## template: jinja` bootstrap data; \
         capssh renders only `{{{{ ds.meta_data.X }}}}` and `{{{{ v1.X }}}}`"
    )]
    UnsupportedTemplate { construct: String, line: usize },
    #[error("cannot decode the content of {path} as `{encoding}`: {reason}")]
    BadEncoding { path: String, encoding: String, reason: &'static str },
    #[error("{what} is not supported by capssh; {remedy}")]
    Unsupported { what: String, remedy: String },
    #[error("{what} is larger than {}, the most capssh reads; nothing was run", mib(*limit))]
    DataTooLarge { what: &'static str, limit: usize },
    #[error(
        "the content of {path} decodes to more than {}, the most capssh writes for one file (a compressed file may not \
         inflate beyond it); nothing was run",
        mib(*limit)
    )]
    FileTooLarge { path: String, limit: usize },
    #[error(
        "the files of the bootstrap data decode to more than {} in all (exceeded at {path}), the most capssh writes for one \
         bootstrap; nothing was run",
        mib(*limit)
    )]
    FilesTooLarge { path: String, limit: usize },
}

/// A byte limit as people read it: `16 MiB (16777216 bytes)`.
fn mib(bytes: usize) -> String {
    format!("{} MiB ({bytes} bytes)", bytes >> 20)
}

/// Turns bootstrap data into a host job. Nothing is run; anything capssh cannot do exactly is
/// an error.
pub fn plan(data: &[u8], format: Format, meta: &MachineMetadata) -> Result<HostJob, BootstrapError> {
    if data.len() > MAX_DATA_BYTES {
        return Err(BootstrapError::DataTooLarge { what: "the bootstrap data", limit: MAX_DATA_BYTES });
    }
    let text = std::str::from_utf8(data).map_err(|_| BootstrapError::NotUtf8)?;
    let (plan, text) = match format {
        Format::CloudConfig => {
            let document = cloudinit::document(text, meta)?;
            (cloudinit::parse(&document, meta)?, document)
        }
        Format::Ignition => (ignition::parse(text)?, text.to_string()),
    };
    let secrets = secrets(&plan, &text);
    Ok(HostJob { script: script::render(&plan), secrets })
}

/// Where files holding cluster keys and certificates are written.
const PKI_DIR: &str = "/etc/kubernetes/pki/";

fn secrets(plan: &script::Plan, text: &str) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    let mut add = |value: String| {
        if !value.trim().is_empty() && !found.contains(&value) {
            found.push(value);
        }
    };
    for file in plan.files() {
        let content = String::from_utf8_lossy(&file.content);
        if file.path.starts_with(PKI_DIR) || content.contains("PRIVATE KEY") {
            add(content.to_string());
        }
        for value in crate::redact::secrets_in(&content) {
            add(value);
        }
    }
    for value in plan.secrets.iter().cloned().chain(crate::redact::secrets_in(text)) {
        add(value);
    }
    found
}

/// A value from the data as it may appear in an error message: short, and redacted.
fn shown(value: &str) -> String {
    let redacted = crate::redact::redact(value);
    let mut shown: String = redacted.chars().take(64).collect();
    if redacted.chars().count() > 64 {
        shown.push('…');
    }
    shown
}
