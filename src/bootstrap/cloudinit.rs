//! cloud-config, as CABPK writes it (bootstrap/kubeadm/pkg/cloudinit/*.go), read the way
//! cloud-init reads it.
//!
//! Supported: `bootcmd`, `write_files` (path, content, encoding, owner, permissions, append,
//! defer), `users` (what CABPK's users template emits), `runcmd`. Refused, naming the
//! KubeadmConfig field that produces them: `ntp`, `disk_setup`, `fs_setup`, `mounts`. Any other
//! key is refused too.

use super::script::{FileWrite, Last, Plan, Step, WriteMode};
use super::shell::quote;
use super::users::{Flavor, User};
use super::{BootstrapError, MAX_DATA_BYTES, MAX_FILE_BYTES, MAX_TOTAL_FILE_BYTES, MachineMetadata, jinja, shown};
use serde_json::{Map, Value};
use std::io::Read as _;

const FORMAT: &str = "cloud-config";

/// The cloud-config document: the `## template: jinja` line removed and the rest rendered, then
/// checked for the `#cloud-config` header (as cloud-init's part handlers do: case-insensitive,
/// after leading whitespace).
pub(super) fn document(text: &str, meta: &MachineMetadata) -> Result<String, BootstrapError> {
    let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
    let document = if first.trim_end().eq_ignore_ascii_case("## template: jinja") { jinja::render(rest, meta)? } else { text.to_string() };
    // Metadata values are longer than the variables naming them.
    if document.len() > MAX_DATA_BYTES {
        return Err(BootstrapError::DataTooLarge { what: "the rendered `## template: jinja` bootstrap data", limit: MAX_DATA_BYTES });
    }
    let start = document.trim_start().to_ascii_lowercase();
    let header_line = start.lines().next().unwrap_or("");
    if !header_line.starts_with("#cloud-config") || header_line.starts_with("#cloud-config-") {
        return Err(BootstrapError::MissingHeader);
    }
    Ok(document)
}

/// The steps for a cloud-config document, in cloud-init's module order: bootcmd (init stage),
/// write_files, users (init stage), deferred write_files (final stage), runcmd (final stage).
pub(super) fn parse(document: &str, meta: &MachineMetadata) -> Result<Plan, BootstrapError> {
    let value: Value = serde_saphyr::from_str(document).map_err(|e| {
        let (line, column) = e.location().map(|l| (l.line(), l.column())).unwrap_or((0, 0));
        if past_limits(&e) { BootstrapError::YamlLimits { line, column } } else { BootstrapError::Yaml { line, column } }
    })?;
    let config = match value {
        Value::Null => Map::new(),
        Value::Object(map) => map,
        _ => return Err(invalid("(top level)", "must be a mapping of cloud-config keys")),
    };
    for key in config.keys() {
        let remedy = match key.as_str() {
            "bootcmd" | "write_files" | "users" | "runcmd" => continue,
            "ntp" => "remove it from the KubeadmConfig (spec.ntp)",
            "disk_setup" => "remove it from the KubeadmConfig (spec.diskSetup.partitions)",
            "fs_setup" => "remove it from the KubeadmConfig (spec.diskSetup.filesystems)",
            "mounts" => "remove it from the KubeadmConfig (spec.mounts)",
            _ => "CABPK does not emit it; remove it from the bootstrap data",
        };
        return Err(BootstrapError::UnsupportedKey { format: FORMAT, key: shown(key), remedy });
    }

    let mut plan = Plan { source: FORMAT, steps: Vec::new(), last: None, secrets: Vec::new() };
    if let Some(bootcmd) = config.get("bootcmd") {
        let items = commands("bootcmd", bootcmd)?;
        let env = meta.values.get("instance_id").map(|id| vec![("INSTANCE_ID".to_string(), id.clone())]).unwrap_or_default();
        plan.steps.push(Step::Commands { module: "bootcmd", items, env });
    }
    let mut deferred = Vec::new();
    if let Some(files) = config.get("write_files") {
        let files = list("write_files", files)?;
        let n = files.len();
        let mut budget = Budget::new();
        for (i, file) in files.iter().enumerate() {
            let (write, defer) = write_file(i, n, file, &mut budget)?;
            if defer { deferred.push(Step::WriteFile(write)) } else { plan.steps.push(Step::WriteFile(write)) }
        }
    }
    if let Some(users) = config.get("users") {
        let users = list("users", users)?;
        let n = users.len();
        for (i, user) in users.iter().enumerate() {
            let user = self::user(i, n, user)?;
            plan.secrets.extend(user.password_hash.iter().filter(|h| !h.is_empty()).cloned());
            plan.steps.push(Step::User(user));
        }
    }
    plan.steps.extend(deferred);
    if let Some(runcmd) = config.get("runcmd") {
        plan.last = Some(Last::Runcmd(commands("runcmd", runcmd)?));
    }
    Ok(plan)
}

/// Whether the YAML parser stopped at one of its limits (alias expansion, nesting, total size:
/// what keeps an alias bomb from filling memory) rather than at a syntax error.
fn past_limits(mut error: &serde_saphyr::Error) -> bool {
    use serde_saphyr::Error;
    loop {
        match error {
            Error::WithSnippet { error: inner, .. } | Error::AliasError { error: inner, .. } => error = inner,
            Error::Budget { .. }
            | Error::AliasReplayCounterOverflow { .. }
            | Error::AliasReplayLimitExceeded { .. }
            | Error::AliasExpansionLimitExceeded { .. }
            | Error::AliasReplayStackDepthExceeded { .. } => return true,
            _ => return false,
        }
    }
}

fn invalid(key: &str, reason: &str) -> BootstrapError {
    BootstrapError::InvalidValue { format: FORMAT, key: key.to_string(), reason: reason.to_string() }
}

fn list<'v>(key: &str, value: &'v Value) -> Result<&'v Vec<Value>, BootstrapError> {
    value.as_array().ok_or_else(|| invalid(key, "must be a list"))
}

/// A bootcmd or runcmd list shellified as cloud-init does: a string is a shell line copied
/// verbatim, a list is argv with each word single-quoted, a null item is skipped.
fn commands(module: &str, value: &Value) -> Result<Vec<String>, BootstrapError> {
    let mut lines = Vec::new();
    for (i, item) in list(module, value)?.iter().enumerate() {
        match item {
            Value::Null => {}
            Value::String(line) => lines.push(line.clone()),
            Value::Array(argv) => {
                let mut words = Vec::with_capacity(argv.len());
                for (j, word) in argv.iter().enumerate() {
                    let word = match word {
                        Value::String(s) => s.clone(),
                        Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
                        _ => {
                            return Err(invalid(
                                &format!("{module}[{i}][{j}]"),
                                "each word of a list-form command must be a string (quote numbers and booleans)",
                            ));
                        }
                    };
                    words.push(quote(&word));
                }
                lines.push(words.join(" "));
            }
            _ => return Err(invalid(&format!("{module}[{i}]"), "must be a string (a shell line) or a list (argv)")),
        }
    }
    Ok(lines)
}

fn keys_allowed(map: &Map<String, Value>, prefix: &str, allowed: &[&str], remedy: &'static str) -> Result<(), BootstrapError> {
    match map.keys().find(|key| !allowed.contains(&key.as_str())) {
        Some(key) => Err(BootstrapError::UnsupportedKey { format: FORMAT, key: format!("{prefix}.{}", shown(key)), remedy }),
        None => Ok(()),
    }
}

/// A string field; null or absent is None.
fn string(map: &Map<String, Value>, prefix: &str, key: &str) -> Result<Option<String>, BootstrapError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(invalid(&format!("{prefix}.{key}"), "must be a string")),
    }
}

fn boolean(map: &Map<String, Value>, prefix: &str, key: &str) -> Result<Option<bool>, BootstrapError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(invalid(&format!("{prefix}.{key}"), "must be true or false")),
    }
}

/// One write_files entry, and whether it is deferred.
fn write_file(i: usize, n: usize, value: &Value, budget: &mut Budget) -> Result<(FileWrite, bool), BootstrapError> {
    let prefix = format!("write_files[{i}]");
    let map = value.as_object().ok_or_else(|| invalid(&prefix, "must be a mapping"))?;
    keys_allowed(
        map,
        &prefix,
        &["path", "content", "encoding", "owner", "permissions", "append", "defer"],
        "CABPK does not emit it; remove it from the file's entry",
    )?;
    let path = string(map, &prefix, "path")?.ok_or_else(|| invalid(&format!("{prefix}.path"), "is missing"))?;
    check_path(FORMAT, &format!("{prefix}.path"), &path)?;
    let content = string(map, &prefix, "content")?.unwrap_or_default();
    let encoding = string(map, &prefix, "encoding")?.unwrap_or_default();
    let content = decode(&path, &encoding, content, budget)?;
    let (user, group) = owner(string(map, &prefix, "owner")?.as_deref().unwrap_or("root:root"));
    let mode = match map.get("permissions") {
        None | Some(Value::Null) => 0o644,
        Some(Value::String(s)) => {
            permissions(s).ok_or_else(|| invalid(&format!("{prefix}.permissions"), "must be an octal mode such as '0640' (at most 07777)"))?
        }
        Some(_) => return Err(invalid(&format!("{prefix}.permissions"), "must be a quoted octal string such as '0640'")),
    };
    let how = if boolean(map, &prefix, "append")?.unwrap_or(false) { WriteMode::Append } else { WriteMode::Replace };
    let defer = boolean(map, &prefix, "defer")?.unwrap_or(false);
    let label = format!("write_files {}/{n}", i + 1);
    Ok((FileWrite { label, path, content, mode: Some(mode), user, group, how }, defer))
}

/// Absolute, naming a file, and usable in a shell word.
pub(super) fn check_path(format: &'static str, key: &str, path: &str) -> Result<(), BootstrapError> {
    let reason = if !path.starts_with('/') {
        "must be an absolute path"
    } else if path.ends_with('/') {
        "must name a file, not a directory"
    } else if path.contains(['\n', '\0']) {
        "must not contain a newline or NUL"
    } else {
        return Ok(());
    };
    Err(BootstrapError::InvalidValue { format, key: key.to_string(), reason: format!("{reason} (got {})", shown(path)) })
}

/// cloud-init's `extract_usergroup`: `user[:group]`, empty, `-1` or `none` meaning "leave".
fn owner(text: &str) -> (Option<String>, Option<String>) {
    let (user, group) = text.split_once(':').unwrap_or((text, ""));
    let keep = |s: &str| {
        let s = s.trim();
        (!s.is_empty() && s != "-1" && !s.eq_ignore_ascii_case("none")).then(|| s.to_string())
    };
    (keep(user), keep(group))
}

/// An octal mode string, as cloud-init's `decode_perms` reads it (`int(s, 8)`).
fn permissions(text: &str) -> Option<u32> {
    let text = text.trim();
    let digits = text.strip_prefix("0o").or_else(|| text.strip_prefix("0O")).unwrap_or(text).replace('_', "");
    let mode = u32::from_str_radix(&digits, 8).ok()?;
    (mode <= 0o7777 && !digits.is_empty()).then_some(mode)
}

/// What decoded file contents may still take in one bootstrap document ([`MAX_FILE_BYTES`] per
/// file, [`MAX_TOTAL_FILE_BYTES`] in all).
pub(super) struct Budget {
    left: usize,
}

impl Budget {
    pub(super) fn new() -> Self {
        Budget { left: MAX_TOTAL_FILE_BYTES }
    }

    /// The most the next file may decode to: decoders stop one byte past it.
    pub(super) fn limit(&self) -> usize {
        self.left.min(MAX_FILE_BYTES)
    }

    /// Counts a file of `len` decoded bytes, or names the limit it passes.
    pub(super) fn take(&mut self, path: &str, len: usize) -> Result<(), BootstrapError> {
        if len > MAX_FILE_BYTES {
            Err(BootstrapError::FileTooLarge { path: path.to_string(), limit: MAX_FILE_BYTES })
        } else if len > self.left {
            Err(BootstrapError::FilesTooLarge { path: path.to_string(), limit: MAX_TOTAL_FILE_BYTES })
        } else {
            self.left -= len;
            Ok(())
        }
    }
}

/// The file's bytes: cloud-init's `canonicalize_extraction` + `extract_contents` (for
/// gzip+base64, base64-decode first, then gunzip). Unknown encodings are refused (cloud-init
/// would write the encoded text as is).
pub(super) fn decode(path: &str, encoding: &str, content: String, budget: &mut Budget) -> Result<Vec<u8>, BootstrapError> {
    let bad = |reason| BootstrapError::BadEncoding { path: path.to_string(), encoding: shown(encoding), reason };
    let (base64, gzip) = match encoding.trim().to_ascii_lowercase().as_str() {
        "" | "text/plain" => (false, false),
        "b64" | "base64" => (true, false),
        "gz" | "gzip" => (false, true),
        "gz+base64" | "gzip+base64" | "gz+b64" | "gzip+b64" => (true, true),
        _ => return Err(bad("unknown encoding (supported: base64, b64, gzip, gz, gzip+base64 and its aliases)")),
    };
    let mut bytes = content.into_bytes();
    if base64 {
        bytes = decode_base64(&bytes).ok_or_else(|| bad("the content is not valid base64"))?;
    }
    if gzip {
        bytes = gunzip(&bytes, budget.limit()).ok_or_else(|| bad("the content is not valid gzip data"))?;
    }
    budget.take(path, bytes.len())?;
    Ok(bytes)
}

/// Standard base64, whitespace ignored, padding optional. (Its output is smaller than its
/// input, which [`MAX_DATA_BYTES`] bounds; callers count it against the [`Budget`].)
pub(super) fn decode_base64(text: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine as _;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const ENGINE: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent).with_decode_allow_trailing_bits(true),
    );
    let compact: Vec<u8> = text.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
    ENGINE.decode(compact).ok()
}

/// Gunzipped `bytes`, all members, read no further than `limit + 1` bytes: a longer result
/// comes back that long, for [`Budget::take`] to refuse, without inflating the rest.
pub(super) fn gunzip(bytes: &[u8], limit: usize) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    flate2::read::MultiGzDecoder::new(bytes).take(cap).read_to_end(&mut out).ok()?;
    Some(out)
}

/// One `users` entry, with the keys CABPK's users template can emit.
fn user(i: usize, n: usize, value: &Value) -> Result<User, BootstrapError> {
    let prefix = format!("users[{i}]");
    let map =
        value.as_object().ok_or_else(|| invalid(&prefix, "must be a mapping with a name (the distribution's `default` user is not supported)"))?;
    keys_allowed(
        map,
        &prefix,
        &["name", "gecos", "groups", "homedir", "inactive", "lock_passwd", "passwd", "shell", "primary_group", "sudo", "ssh_authorized_keys"],
        "CABPK does not emit it; remove it from the user's entry",
    )?;
    let name = string(map, &prefix, "name")?.ok_or_else(|| invalid(&format!("{prefix}.name"), "is missing"))?;
    check_name(FORMAT, &format!("{prefix}.name"), &name)?;
    let groups = match map.get("groups") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => s.split(',').map(|g| g.trim().to_string()).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|g| g.as_str().map(|g| g.trim().to_string()))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| invalid(&format!("{prefix}.groups"), "must be a string or a list of strings"))?,
        Some(_) => return Err(invalid(&format!("{prefix}.groups"), "must be a string or a list of strings")),
    };
    for group in &groups {
        check_name(FORMAT, &format!("{prefix}.groups"), group)?;
    }
    let inactive = match map.get("inactive") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => None,
        Some(Value::String(days)) => Some(days.clone()),
        Some(Value::Bool(true)) => {
            return Err(BootstrapError::Unsupported {
                what: format!("`{prefix}.inactive: true`"),
                remedy: "cloud-init ignores a boolean `inactive` (useradd --inactive takes a number of days), so capssh refuses it rather than \
                         do nothing; remove inactive from the KubeadmConfig's spec.users entry"
                    .to_string(),
            });
        }
        Some(_) => return Err(invalid(&format!("{prefix}.inactive"), "must be a quoted number of days")),
    };
    let sudo = match map.get("sudo") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => Vec::new(),
        Some(Value::String(rule)) => vec![rule.clone()],
        Some(Value::Array(rules)) => rules
            .iter()
            .map(|r| r.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| invalid(&format!("{prefix}.sudo"), "must be a string or a list of strings"))?,
        Some(_) => return Err(invalid(&format!("{prefix}.sudo"), "must be a sudoers rule string, a list of them, or false")),
    };
    let ssh_authorized_keys = match map.get("ssh_authorized_keys") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(key)) => vec![key.clone()],
        Some(Value::Array(keys)) => keys
            .iter()
            .map(|k| k.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| invalid(&format!("{prefix}.ssh_authorized_keys"), "must be a list of strings"))?,
        Some(_) => return Err(invalid(&format!("{prefix}.ssh_authorized_keys"), "must be a list of strings")),
    };
    let password_hash = string(map, &prefix, "passwd")?;
    for (key, values) in
        [("sudo", &sudo), ("ssh_authorized_keys", &ssh_authorized_keys), ("passwd", &password_hash.iter().cloned().collect::<Vec<_>>())]
    {
        if values.iter().any(|v| v.contains(['\n', '\r', '\0'])) {
            return Err(invalid(&format!("{prefix}.{key}"), "must be a single line"));
        }
    }
    Ok(User {
        label: format!("users {}/{n}", i + 1),
        flavor: Flavor::CloudInit,
        name,
        gecos: string(map, &prefix, "gecos")?,
        groups,
        homedir: string(map, &prefix, "homedir")?,
        primary_group: string(map, &prefix, "primary_group")?,
        shell: string(map, &prefix, "shell")?,
        inactive,
        password_hash,
        lock_passwd: boolean(map, &prefix, "lock_passwd")?.unwrap_or(true),
        sudo,
        ssh_authorized_keys,
    })
}

/// A user or group name that useradd and chpasswd can take.
pub(super) fn check_name(format: &'static str, key: &str, name: &str) -> Result<(), BootstrapError> {
    if name.is_empty() || name.starts_with('-') || name.contains([':', ',', '\n', '\r', '\0', ' ', '\t']) {
        return Err(BootstrapError::InvalidValue {
            format,
            key: key.to_string(),
            reason: format!("`{}` is not a valid user or group name", shown(name)),
        });
    }
    Ok(())
}
