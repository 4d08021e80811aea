//! Ignition, as CABPK writes it: spec 2.3.0 JSON transpiled from a Container Linux Config
//! (bootstrap/kubeadm/pkg/ignition/clc/clc.go), carried out in Ignition's files-stage order:
//! `passwd.users`, then `storage.files`, then `systemd.units`.
//!
//! Supported: `storage.files` with `data:` URLs (percent-encoded or base64, optionally gzip
//! compressed), `mode`, `user`/`group` (name or id), `overwrite`, `append`; `passwd.users`
//! (the fields CABPK emits); `systemd.units` with `contents`, `dropins`, `enabled`.
//!
//! Units and kubeadm.service: see `systemd`.
//!
//! Refused, by name: disks, filesystems, raid, directories, links, networkd, groups, remote or
//! merged configs, remote file contents and hashes, masked units, mount units and ntpd.service
//! (produced by spec.mounts and spec.ntp).

use super::cloudinit::{Budget, check_name, check_path, decode_base64, gunzip};
use super::script::{FileWrite, Plan, Step, WriteMode};
use super::users::{Flavor, User};
use super::{BootstrapError, shown};
use serde_json::{Map, Value};

pub(super) const FORMAT: &str = "ignition";

pub(super) fn parse(text: &str) -> Result<Plan, BootstrapError> {
    let value: Value = serde_json::from_str(text).map_err(|e| BootstrapError::Json {
        line: e.line(),
        column: e.column(),
        category: match e.classify() {
            serde_json::error::Category::Io => "read error",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "unexpected data",
            serde_json::error::Category::Eof => "unexpected end",
        },
    })?;
    let root = object(&value, "(top level)")?;
    allowed(root, "", &["ignition", "passwd", "storage", "systemd", "networkd"])?;
    let ignition = object_or_empty(root.get("ignition"), "ignition")?;
    allowed(ignition, "ignition", &["version", "config", "security", "timeouts"])?;
    match ignition.get("version").and_then(Value::as_str) {
        Some("2.3.0") => {}
        other => {
            return Err(invalid("ignition.version", &format!("must be 2.3.0 (what CABPK emits), got {}", shown(other.unwrap_or("nothing")))));
        }
    }
    refuse_non_empty(ignition, "ignition", "config", "remote and merged configs are not supported; CABPK does not emit them")?;
    refuse_non_empty(ignition, "ignition", "security", "remote configs are not supported; CABPK does not emit them")?;
    refuse_non_empty(root, "", "networkd", "CABPK does not emit it; remove it from ignition.containerLinuxConfig.additionalConfig")?;

    let mut plan = Plan { source: FORMAT, steps: Vec::new(), last: None, secrets: Vec::new() };
    let passwd = object_or_empty(root.get("passwd"), "passwd")?;
    allowed(passwd, "passwd", &["users", "groups"])?;
    refuse_non_empty(passwd, "passwd", "groups", "remove it from ignition.containerLinuxConfig.additionalConfig")?;
    let users = array_or_empty(passwd.get("users"), "passwd.users")?;
    for (i, user) in users.iter().enumerate() {
        let user = self::user(i, users.len(), user)?;
        plan.secrets.extend(user.password_hash.iter().filter(|h| !h.is_empty()).cloned());
        plan.steps.push(Step::User(user));
    }

    let storage = object_or_empty(root.get("storage"), "storage")?;
    allowed(storage, "storage", &["files", "directories", "disks", "filesystems", "links", "raid"])?;
    refuse_non_empty(storage, "storage", "disks", "remove it from the KubeadmConfig (spec.diskSetup.partitions)")?;
    refuse_non_empty(storage, "storage", "filesystems", "remove it from the KubeadmConfig (spec.diskSetup.filesystems)")?;
    for key in ["directories", "links", "raid"] {
        refuse_non_empty(storage, "storage", key, "CABPK does not emit it; remove it from ignition.containerLinuxConfig.additionalConfig")?;
    }
    let files = array_or_empty(storage.get("files"), "storage.files")?;
    let mut budget = Budget::new();
    for (i, file) in files.iter().enumerate() {
        plan.steps.push(Step::WriteFile(self::file(i, files.len(), file, &mut budget)?));
    }

    let systemd = object_or_empty(root.get("systemd"), "systemd")?;
    allowed(systemd, "systemd", &["units"])?;
    super::systemd::units(&mut plan, array_or_empty(systemd.get("units"), "systemd.units")?)?;
    Ok(plan)
}

pub(super) fn invalid(key: &str, reason: &str) -> BootstrapError {
    BootstrapError::InvalidValue { format: FORMAT, key: key.to_string(), reason: reason.to_string() }
}

pub(super) fn object<'v>(value: &'v Value, key: &str) -> Result<&'v Map<String, Value>, BootstrapError> {
    value.as_object().ok_or_else(|| invalid(key, "must be an object"))
}

fn object_or_empty<'v>(value: Option<&'v Value>, key: &str) -> Result<&'v Map<String, Value>, BootstrapError> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    match value {
        None | Some(Value::Null) => Ok(EMPTY.get_or_init(Map::new)),
        Some(value) => object(value, key),
    }
}

pub(super) fn array_or_empty<'v>(value: Option<&'v Value>, key: &str) -> Result<&'v [Value], BootstrapError> {
    match value {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(invalid(key, "must be a list")),
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() { key.to_string() } else { format!("{prefix}.{key}") }
}

pub(super) fn allowed(map: &Map<String, Value>, prefix: &str, keys: &[&str]) -> Result<(), BootstrapError> {
    match map.keys().find(|key| !keys.contains(&key.as_str())) {
        Some(key) => Err(BootstrapError::UnsupportedKey {
            format: FORMAT,
            key: join(prefix, &shown(key)),
            remedy: "it is not part of Ignition spec 2.3.0 as CABPK emits it",
        }),
        None => Ok(()),
    }
}

/// Go's encoding/json writes empty structs as `{}`: null, false, "", [] and objects holding
/// only those are empty.
fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null | Value::Bool(false) => true,
        Value::String(s) => s.is_empty(),
        Value::Array(items) => items.is_empty(),
        Value::Object(map) => map.values().all(is_empty),
        _ => false,
    }
}

fn refuse_non_empty(map: &Map<String, Value>, prefix: &str, key: &str, remedy: &'static str) -> Result<(), BootstrapError> {
    match map.get(key) {
        Some(value) if !is_empty(value) => Err(BootstrapError::UnsupportedKey { format: FORMAT, key: join(prefix, key), remedy }),
        _ => Ok(()),
    }
}

pub(super) fn string<'v>(map: &'v Map<String, Value>, prefix: &str, key: &str) -> Result<Option<&'v str>, BootstrapError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid(&join(prefix, key), "must be a string")),
    }
}

pub(super) fn boolean(map: &Map<String, Value>, prefix: &str, key: &str) -> Result<Option<bool>, BootstrapError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(invalid(&join(prefix, key), "must be true or false")),
    }
}

fn file(i: usize, n: usize, value: &Value, budget: &mut Budget) -> Result<FileWrite, BootstrapError> {
    let prefix = format!("storage.files[{i}]");
    let map = object(value, &prefix)?;
    allowed(map, &prefix, &["filesystem", "path", "user", "group", "overwrite", "append", "contents", "mode"])?;
    match string(map, &prefix, "filesystem")? {
        None | Some("root") => {}
        Some(_) => return Err(invalid(&format!("{prefix}.filesystem"), "must be `root` (other filesystems are not supported)")),
    }
    let path = string(map, &prefix, "path")?.ok_or_else(|| invalid(&format!("{prefix}.path"), "is missing"))?.to_string();
    check_path(FORMAT, &format!("{prefix}.path"), &path)?;
    let contents = object_or_empty(map.get("contents"), &format!("{prefix}.contents"))?;
    allowed(contents, &format!("{prefix}.contents"), &["compression", "source", "verification"])?;
    refuse_non_empty(contents, &format!("{prefix}.contents"), "verification", "content hashes are not supported; CABPK does not emit them")?;
    let source = string(contents, &prefix, "source")?.unwrap_or("");
    let mut content = if source.is_empty() {
        Vec::new()
    } else {
        data_url(source).ok_or_else(|| BootstrapError::BadEncoding {
            path: path.clone(),
            encoding: "data URL".to_string(),
            reason: "contents.source must be a valid data: URL (remote contents are not supported)",
        })?
    };
    match string(contents, &prefix, "compression")?.unwrap_or("") {
        "" => {}
        "gzip" => {
            content = gunzip(&content, budget.limit()).ok_or(BootstrapError::BadEncoding {
                path: path.clone(),
                encoding: "gzip".to_string(),
                reason: "the content is not valid gzip data",
            })?;
        }
        other => {
            return Err(invalid(&format!("{prefix}.contents.compression"), &format!("`{}` is not supported (only gzip)", shown(other))));
        }
    }
    budget.take(&path, content.len())?;
    let append = boolean(map, &prefix, "append")?.unwrap_or(false);
    let how = match (append, boolean(map, &prefix, "overwrite")?) {
        (true, _) => WriteMode::Append,
        (false, Some(false)) => WriteMode::Create,
        (false, _) => WriteMode::Replace,
    };
    let mode = match map.get("mode") {
        None | Some(Value::Null) => (!append).then_some(0o644),
        Some(Value::Number(m)) => Some(
            m.as_u64().filter(|m| *m <= 0o7777).ok_or_else(|| invalid(&format!("{prefix}.mode"), "must be a mode between 0 and 4095 (decimal)"))?
                as u32,
        ),
        Some(_) => return Err(invalid(&format!("{prefix}.mode"), "must be a number (decimal)")),
    };
    // Ignition's default owner is root, or the existing file's owner when appending.
    let default = (!append).then(|| "0".to_string());
    let user = owner(map, &prefix, "user")?.or_else(|| default.clone());
    let group = owner(map, &prefix, "group")?.or(default);
    Ok(FileWrite { label: format!("storage.files {}/{n}", i + 1), path, content, mode, user, group, how })
}

/// `{"name": …}` or `{"id": …}`.
fn owner(map: &Map<String, Value>, prefix: &str, field: &str) -> Result<Option<String>, BootstrapError> {
    let key = format!("{prefix}.{field}");
    let value = match map.get(field) {
        Some(value) if !is_empty(value) => value,
        _ => return Ok(None),
    };
    let entry = object(value, &key)?;
    allowed(entry, &key, &["id", "name"])?;
    let name = string(entry, &key, "name")?.filter(|n| !n.is_empty());
    match (entry.get("id").filter(|id| !id.is_null()), name) {
        (Some(id), None) => {
            let id = id.as_u64().ok_or_else(|| invalid(&format!("{key}.id"), "must be a non-negative number"))?;
            Ok(Some(id.to_string()))
        }
        (None, Some(name)) => {
            check_name(FORMAT, &key, name)?;
            Ok(Some(name.to_string()))
        }
        _ => Err(invalid(&key, "must have either an id or a name")),
    }
}

/// An RFC 2397 `data:` URL's bytes.
pub(super) fn data_url(url: &str) -> Option<Vec<u8>> {
    let rest = url.strip_prefix("data:")?;
    let (header, data) = rest.split_once(',')?;
    let bytes = percent_decode(data)?;
    if header.rsplit(';').next().is_some_and(|p| p.eq_ignore_ascii_case("base64")) { decode_base64(&bytes) } else { Some(bytes) }
}

/// `%XX` escapes decoded (RFC 3986); None for a malformed escape.
pub fn percent_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

fn user(i: usize, n: usize, value: &Value) -> Result<User, BootstrapError> {
    let prefix = format!("passwd.users[{i}]");
    let map = object(value, &prefix)?;
    allowed(
        map,
        &prefix,
        &[
            "name",
            "passwordHash",
            "sshAuthorizedKeys",
            "gecos",
            "groups",
            "homeDir",
            "shell",
            "primaryGroup",
            "uid",
            "create",
            "noCreateHome",
            "noUserGroup",
            "noLogInit",
            "system",
        ],
    )?;
    for key in ["uid", "create", "noCreateHome", "noUserGroup", "noLogInit", "system"] {
        refuse_non_empty(map, &prefix, key, "CABPK does not emit it; remove it from ignition.containerLinuxConfig.additionalConfig")?;
    }
    let name = string(map, &prefix, "name")?.ok_or_else(|| invalid(&format!("{prefix}.name"), "is missing"))?.to_string();
    check_name(FORMAT, &format!("{prefix}.name"), &name)?;
    let strings = |key: &str| -> Result<Vec<String>, BootstrapError> {
        array_or_empty(map.get(key), &join(&prefix, key))?
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(|| invalid(&join(&prefix, key), "must be a list of strings")))
            .collect()
    };
    let groups = strings("groups")?;
    for group in &groups {
        check_name(FORMAT, &format!("{prefix}.groups"), group)?;
    }
    let keys = strings("sshAuthorizedKeys")?;
    let password_hash = string(map, &prefix, "passwordHash")?.map(str::to_string);
    if keys.iter().chain(password_hash.iter()).any(|v| v.contains(['\n', '\r', '\0'])) {
        return Err(invalid(&prefix, "SSH keys and the password hash must be single lines"));
    }
    let text = |key: &str| -> Result<Option<String>, BootstrapError> { Ok(string(map, &prefix, key)?.filter(|s| !s.is_empty()).map(str::to_string)) };
    Ok(User {
        label: format!("passwd.users {}/{n}", i + 1),
        flavor: Flavor::Ignition,
        name,
        gecos: text("gecos")?,
        groups,
        homedir: text("homeDir")?,
        primary_group: text("primaryGroup")?,
        shell: text("shell")?,
        inactive: None,
        password_hash,
        lock_passwd: false,
        sudo: Vec::new(),
        ssh_authorized_keys: keys,
    })
}
