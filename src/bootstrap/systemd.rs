//! systemd units from Ignition's `systemd.units`, and CABPK's kubeadm.service.
//!
//! kubeadm.service is CABPK's oneshot unit running /etc/kubeadm.sh. capssh writes the unit
//! file but neither enables it nor starts it through systemd (whose journal would hold the
//! output, and whose next boot would run it again): it runs the unit's ExecStart directly as the
//! job's last step, honouring its ConditionPathExists, so kubeadm's output is the job's log and
//! its exit status the job's. The unit may only hold directives that this preserves.
//!
//! Other units are written to /etc/systemd/system (drop-ins to `<unit>.d/`), then
//! `systemctl daemon-reload`; an `enabled` unit is enabled and restarted (as a boot would start
//! it), `enabled: false` is disabled, and a unit whose files changed but that is not enabled is
//! `try-restart`ed (restarted if running). Masked, mount and swap units and ntpd.service are
//! refused.

use super::BootstrapError;
use super::ignition::{allowed, array_or_empty, boolean, invalid, object, string};
use super::script::{FileWrite, Last, PathCondition, Plan, Step, WriteMode};
use super::shown;
use serde_json::Value;

const KUBEADM_UNIT: &str = "kubeadm.service";
const UNIT_DIR: &str = "/etc/systemd/system";

pub(super) fn units(plan: &mut Plan, units: &[Value]) -> Result<(), BootstrapError> {
    let n = units.len();
    let mut wrote_files = false;
    let mut systemctl = Vec::new();
    for (i, value) in units.iter().enumerate() {
        let prefix = format!("systemd.units[{i}]");
        let map = object(value, &prefix)?;
        allowed(map, &prefix, &["name", "contents", "dropins", "enable", "enabled", "mask"])?;
        let name = string(map, &prefix, "name")?.ok_or_else(|| invalid(&format!("{prefix}.name"), "is missing"))?;
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || ":-_.\\@".contains(c)) || !name.contains('.') {
            return Err(invalid(&format!("{prefix}.name"), &format!("`{}` is not a unit name", shown(name))));
        }
        let label = format!("systemd.units {}/{n}", i + 1);
        if [".mount", ".automount", ".swap"].iter().any(|suffix| name.ends_with(suffix)) {
            return Err(unsupported_unit(name, "remove spec.mounts (and spec.diskSetup) from the KubeadmConfig"));
        }
        if name == "ntpd.service" {
            return Err(unsupported_unit(name, "remove spec.ntp from the KubeadmConfig"));
        }
        if boolean(map, &prefix, "mask")?.unwrap_or(false) {
            return Err(unsupported_unit(name, "masking units is not supported; remove `mask` from the unit"));
        }
        let contents = string(map, &prefix, "contents")?.filter(|c| !c.is_empty());
        let dropins = array_or_empty(map.get("dropins"), &format!("{prefix}.dropins"))?;
        if name == KUBEADM_UNIT {
            if !dropins.is_empty() {
                return Err(unsupported_unit(name, "capssh runs kubeadm.service's ExecStart itself, so drop-ins for it are not supported"));
            }
            let contents = contents.ok_or_else(|| unsupported_unit(name, "kubeadm.service must have contents (CABPK's unit)"))?;
            let (argv, condition) = exec_start(contents)?;
            plan.steps.push(unit_file(&label, format!("{UNIT_DIR}/{name}"), contents));
            plan.last = Some(Last::Exec { label: KUBEADM_UNIT.to_string(), argv, condition });
            continue;
        }
        let mut changed = false;
        if let Some(contents) = contents {
            plan.steps.push(unit_file(&label, format!("{UNIT_DIR}/{name}"), contents));
            changed = true;
        }
        for (j, dropin) in dropins.iter().enumerate() {
            let key = format!("{prefix}.dropins[{j}]");
            let dropin = object(dropin, &key)?;
            allowed(dropin, &key, &["name", "contents"])?;
            let file = string(dropin, &key, "name")?
                .filter(|f| !f.is_empty() && !f.contains('/'))
                .ok_or_else(|| invalid(&format!("{key}.name"), "must be a file name"))?;
            if let Some(contents) = string(dropin, &key, "contents")?.filter(|c| !c.is_empty()) {
                plan.steps.push(unit_file(&label, format!("{UNIT_DIR}/{name}.d/{file}"), contents));
                changed = true;
            }
        }
        wrote_files |= changed;
        let enabled = boolean(map, &prefix, "enabled")?.or(boolean(map, &prefix, "enable")?.filter(|e| *e));
        match enabled {
            Some(true) => {
                systemctl.push(Step::Systemctl { label: label.clone(), args: vec!["enable".into(), name.into()] });
                systemctl.push(Step::Systemctl { label, args: vec!["restart".into(), name.into()] });
            }
            Some(false) => systemctl.push(Step::Systemctl { label, args: vec!["disable".into(), name.into()] }),
            None if changed => systemctl.push(Step::Systemctl { label, args: vec!["try-restart".into(), name.into()] }),
            None => {}
        }
    }
    if plan.last.is_none() {
        return Err(BootstrapError::Unsupported {
            what: "ignition data without kubeadm.service".to_string(),
            remedy: "capssh runs CABPK's kubeadm.service; keep it in the bootstrap data".to_string(),
        });
    }
    if wrote_files || !systemctl.is_empty() {
        plan.steps.push(Step::Systemctl { label: "systemd.units".into(), args: vec!["daemon-reload".into()] });
    }
    plan.steps.extend(systemctl);
    Ok(())
}

fn unsupported_unit(name: &str, remedy: &str) -> BootstrapError {
    BootstrapError::Unsupported { what: format!("systemd unit `{}`", shown(name)), remedy: remedy.to_string() }
}

fn unit_file(label: &str, path: String, contents: &str) -> Step {
    Step::WriteFile(FileWrite {
        label: label.to_string(),
        path,
        content: contents.as_bytes().to_vec(),
        mode: Some(0o644),
        user: Some("0".into()),
        group: Some("0".into()),
        how: WriteMode::Replace,
    })
}

/// kubeadm.service's ExecStart as argv, and its ConditionPathExists, refusing any directive
/// that running the command directly would not honour.
fn exec_start(contents: &str) -> Result<(Vec<String>, Option<PathCondition>), BootstrapError> {
    let refuse = |what: String| {
        unsupported_unit(
            KUBEADM_UNIT,
            &format!(
                "capssh runs its ExecStart directly and cannot honour {what}; CABPK's unit has only Description, ConditionPathExists, After, Type=oneshot and ExecStart"
            ),
        )
    };
    let mut section = String::new();
    let mut exec = None;
    let mut condition = None;
    let mut oneshot = false;
    let joined = contents.replace("\\\n", " ");
    for line in joined.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') && line.ends_with(']') {
            section = line[1..line.len() - 1].to_string();
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(refuse("a line that is not `Key=value`".to_string()));
        };
        let (key, value) = (key.trim(), value.trim());
        match (section.as_str(), key) {
            ("Unit", "Description" | "Documentation" | "After" | "Before" | "Wants" | "Requires") => {}
            ("Unit", "ConditionPathExists") if condition.is_none() => {
                let (path, negated) = match value.strip_prefix('!') {
                    Some(path) => (path, true),
                    None => (value, false),
                };
                if !path.starts_with('/') || path.contains(['%', '\n']) {
                    return Err(refuse(format!("ConditionPathExists={}", shown(value))));
                }
                condition = Some(PathCondition { path: path.to_string(), negated });
            }
            ("Service", "Type") if value == "oneshot" => oneshot = true,
            ("Service", "RemainAfterExit") => {}
            ("Service", "ExecStart") if exec.is_none() => {
                let ok = value.starts_with('/') && !value.contains(['"', '\'', '\\', '$', '%', ';']);
                if !ok {
                    return Err(refuse("an ExecStart with a prefix, quoting, variables or specifiers".to_string()));
                }
                exec = Some(value.split_whitespace().map(str::to_string).collect::<Vec<_>>());
            }
            ("Install", _) => {}
            _ => return Err(refuse(format!("`{}=` in [{}]", shown(key), shown(&section)))),
        }
    }
    match (exec, oneshot) {
        (Some(argv), true) => Ok((argv, condition)),
        _ => Err(refuse("a unit without Type=oneshot and one ExecStart".to_string())),
    }
}
