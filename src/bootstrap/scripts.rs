//! Every shell script capssh runs on a host, in one folder and one style: a POSIX sh file,
//! included here, whose inputs arrive as a prelude of shell-quoted assignments
//! ([`with_inputs`]) and never by formatting values into its text. A unit test runs `sh -n` on
//! each; CI runs shellcheck over the folder. (The bootstrap job itself is generated from the
//! bootstrap data: see `script.rs`.)

/// Starts a host-side job at most once; the job's script comes on stdin.
pub const JOB_START: &str = include_str!("scripts/job-start.sh");
/// The states of several jobs and whether some paths exist, in one round trip.
pub const JOB_RECORDS: &str = include_str!("scripts/job-records.sh");
/// The end of a job's log, bounded in lines and bytes.
pub const JOB_LOG_TAIL: &str = include_str!("scripts/job-log-tail.sh");
/// Forgets a finished job.
pub const JOB_REMOVE: &str = include_str!("scripts/job-remove.sh");
/// Records on disk that a job succeeded.
pub const JOB_SUCCEEDED: &str = include_str!("scripts/job-succeeded.sh");
/// Stops running bootstrap and preparation jobs before a reset.
pub const JOB_STOP: &str = include_str!("scripts/job-stop.sh");
/// Host facts for SSHHost.status.facts.
pub const PROBE: &str = include_str!("scripts/probe.sh");
/// Records which SSHHost stands for the box, and reports another one already recorded there.
pub const OWNER_RECORD: &str = include_str!("scripts/owner-record.sh");
/// Removes the owner record of an SSHHost deleted while free, if it is still that SSHHost's.
pub const OWNER_RELEASE: &str = include_str!("scripts/owner-release.sh");
/// Whether a provisioned host still answers, as root.
pub const HEALTH: &str = include_str!("scripts/health.sh");
/// The reset run (as a job) when a machine is deleted.
pub const RESET: &str = include_str!("scripts/reset.sh");
/// What must hold before a reset host returns to the pool.
pub const VERIFY_RESET: &str = include_str!("scripts/verify-reset.sh");
/// Host preparation: shared functions, then one mode's part (see `prepare`).
pub const PREPARE_LIB: &str = include_str!("scripts/prepare-lib.sh");
pub const PREPARE_REGISTRY: &str = include_str!("scripts/prepare-registry.sh");
pub const PREPARE_ARTIFACTS: &str = include_str!("scripts/prepare-artifacts.sh");
pub const PREPARE_PACKAGES: &str = include_str!("scripts/prepare-packages.sh");
pub const PREPARE_VERIFY: &str = include_str!("scripts/prepare-verify.sh");

/// Every script by file name (for the syntax check).
pub const ALL: &[(&str, &str)] = &[
    ("job-start.sh", JOB_START),
    ("job-records.sh", JOB_RECORDS),
    ("job-log-tail.sh", JOB_LOG_TAIL),
    ("job-remove.sh", JOB_REMOVE),
    ("job-succeeded.sh", JOB_SUCCEEDED),
    ("job-stop.sh", JOB_STOP),
    ("probe.sh", PROBE),
    ("owner-record.sh", OWNER_RECORD),
    ("owner-release.sh", OWNER_RELEASE),
    ("health.sh", HEALTH),
    ("reset.sh", RESET),
    ("verify-reset.sh", VERIFY_RESET),
    ("prepare-lib.sh", PREPARE_LIB),
    ("prepare-registry.sh", PREPARE_REGISTRY),
    ("prepare-artifacts.sh", PREPARE_ARTIFACTS),
    ("prepare-packages.sh", PREPARE_PACKAGES),
    ("prepare-verify.sh", PREPARE_VERIFY),
];

/// `script` preceded by `NAME='value'` lines. Names must be shell identifiers.
pub fn with_inputs(script: &str, inputs: &[(&str, &str)]) -> String {
    let mut text = String::with_capacity(script.len() + 64 * inputs.len());
    for (name, value) in inputs {
        debug_assert!(name.chars().all(|c| c.is_ascii_uppercase() || c == '_'), "{name}");
        text.push_str(name);
        text.push('=');
        text.push_str(&super::shell::quote(value));
        text.push('\n');
    }
    text.push_str(script);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_script_is_valid_sh() {
        for (name, script) in ALL {
            let check = std::process::Command::new("sh").args(["-n", "-c", script]).output().expect("sh runs");
            assert!(check.status.success(), "{name}: {}", String::from_utf8_lossy(&check.stderr));
        }
    }

    #[test]
    fn every_script_file_is_listed() {
        let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/bootstrap/scripts");
        let mut files: Vec<String> = std::fs::read_dir(folder).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        files.sort();
        let mut listed: Vec<String> = ALL.iter().map(|(name, _)| name.to_string()).collect();
        listed.sort();
        assert_eq!(files, listed);
    }

    #[test]
    fn inputs_are_quoted_not_interpreted() {
        let text = with_inputs("printf '%s' \"$NAME\"", &[("NAME", "a'b $(touch /nonexistent) `x`")]);
        let out = std::process::Command::new("sh").args(["-c", &text]).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "a'b $(touch /nonexistent) `x`");
    }
}
