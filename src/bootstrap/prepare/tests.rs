use super::*;
use crate::api::v1alpha1::{ArtifactsSource, PackagesSource, RegistryMirror, RegistryMirrors};
use base64::Engine;
use std::process::Command;

/// Without a registry (the tests of the registry call `super::plan` with one).
fn plan(preparation: &Preparation, version: Option<&str>, host: &str, facts: &HostFacts) -> Result<Work, PrepareError> {
    super::plan(preparation, None, version, host, facts)
}

fn facts(os: &str, arch: &str) -> HostFacts {
    HostFacts { os: os.into(), os_version: "12".into(), arch: arch.into(), ..HostFacts::default() }
}

fn artifacts(url: &str, pin: Option<&str>) -> Preparation {
    Preparation {
        mode: PreparationMode::Artifacts,
        artifacts: Some(ArtifactsSource { url: url.into(), checksums_sha256: pin.map(str::to_string) }),
        packages: None,
        registry: None,
    }
}

fn packages(repository: Option<&str>) -> Preparation {
    signed_packages(repository, None)
}

fn signed_packages(repository: Option<&str>, key: Option<&str>) -> Preparation {
    Preparation {
        mode: PreparationMode::Packages,
        artifacts: None,
        packages: Some(PackagesSource {
            repository_url: repository.map(str::to_string),
            signing_key: key.map(str::to_string),
            container_runtime_package: None,
        }),
        registry: None,
    }
}

/// The shape of `gpg --armor --export` (the content is not parsed).
const KEY: &str =
    "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmDMEZ8zJwRYJKwYBBAHaRw8BAQdAk0mz0cWvX7y4q8e8t0ZtQk1yb2Zr\n=abcd\n-----END PGP PUBLIC KEY BLOCK-----\n";

fn job(work: Work) -> PrepareJob {
    match work {
        Work::Job(job) => job,
        Work::Verify { .. } => panic!("expected a job"),
    }
}

/// `sh -n` (dash here, as on Debian hosts): the script parses.
fn assert_parses(script: &str) {
    let dir = std::env::temp_dir().join(format!("capssh-prepare-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("script-{}.sh", script.len()));
    std::fs::write(&path, script).unwrap();
    let out = Command::new("sh").arg("-n").arg(&path).output().unwrap();
    assert!(out.status.success(), "sh -n: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn every_mode_renders_a_script_that_parses() {
    let debian = facts("debian", "amd64");
    let pin = "a".repeat(64);
    let artifacts = job(plan(&artifacts("http://198.18.0.129:8080/mirror/", Some(&pin)), Some("v1.36.3"), "h1", &debian).unwrap());
    assert!(artifacts.script.contains("MIRROR_URL='http://198.18.0.129:8080/mirror'\n"), "trailing slash dropped");
    assert!(artifacts.script.contains("VERSION='v1.36.3'\nARCH='amd64'\n"));
    assert_parses(&artifacts.script);
    for (os, family) in [("ubuntu", "debian"), ("rocky", "redhat"), ("fedora", "redhat")] {
        let job = job(plan(&packages(None), Some("v1.36.3"), "h1", &facts(os, "arm64")).unwrap());
        assert!(job.script.contains(&format!("OS_FAMILY='{family}'")));
        assert!(job.script.contains("REPOSITORY_URL='https://pkgs.k8s.io'"));
        assert_parses(&job.script);
    }
    let Work::Verify { script } = plan(
        &Preparation { mode: PreparationMode::None, artifacts: None, packages: None, registry: None },
        Some("v1.36.3"),
        "h1",
        &facts("anything", "riscv64"),
    )
    .unwrap() else {
        panic!("mode None verifies");
    };
    assert_parses(&script);
}

#[test]
fn the_runtime_package_follows_the_distribution() {
    let script = |os: &str| job(plan(&packages(None), Some("v1.36.3"), "h1", &facts(os, "amd64")).unwrap()).script;
    assert!(script("debian").contains("RUNTIME_PACKAGE='containerd'\n"));
    assert!(script("fedora").contains("RUNTIME_PACKAGE='containerd'\n"));
    assert!(script("rhel").contains("RUNTIME_PACKAGE='containerd.io'\n"));
}

#[test]
fn hosts_and_specs_capssh_cannot_serve_are_refused_before_anything_runs() {
    let debian = facts("debian", "amd64");
    let mirror = artifacts("https://mirror.example/k8s", None);
    let reason = |result: Result<Work, PrepareError>| result.err().map(|e| e.reason());
    assert_eq!(reason(plan(&mirror, None, "h1", &debian)), Some("MissingVersion"));
    for bad in ["1.36.3", "v1.36", "v1.36.3;rm -rf /", "v1.36.3-", "latest"] {
        assert_eq!(reason(plan(&mirror, Some(bad), "h1", &debian)), Some("InvalidVersion"), "{bad}");
    }
    assert!(plan(&mirror, Some("v1.36.3-rc.1+build.7"), "h1", &debian).is_ok());
    let err = plan(&mirror, Some("v1.36.3"), "h7", &facts("alpine", "amd64")).err().unwrap();
    assert_eq!(err.reason(), "UnsupportedOS");
    assert!(err.to_string().contains("host h7 runs alpine 12"), "{err}");
    assert!(err.to_string().contains("debian, ubuntu"), "{err}");
    assert_eq!(reason(plan(&mirror, Some("v1.36.3"), "h1", &facts("debian", "mips"))), Some("UnsupportedArch"));
    for bad in ["ftp://mirror.example", "https://", "https://m.example/a b", "https://m.example/?x=1", "https://m.example/'x"] {
        assert_eq!(reason(plan(&artifacts(bad, None), Some("v1.36.3"), "h1", &debian)), Some("InvalidSource"), "{bad}");
    }
    assert_eq!(reason(plan(&artifacts("https://m.example", Some("ABC")), Some("v1.36.3"), "h1", &debian)), Some("InvalidSource"));
    assert_eq!(reason(plan(&packages(Some("https://u:p@repo.example")), Some("v1.36.3"), "h1", &debian)), Some("InvalidSource"));
}

#[test]
fn a_password_in_the_mirror_url_is_a_secret() {
    let job = job(plan(&artifacts("https://user:s3cret@mirror.example/k8s", None), Some("v1.36.3"), "h1", &facts("debian", "amd64")).unwrap());
    assert!(job.secrets.contains(&"s3cret".to_string()));
    assert!(job.secrets.contains(&"user:s3cret".to_string()));
    assert!(!format!("{job:?}").contains("s3cret"));
}

#[test]
fn a_different_preparation_is_a_different_job() {
    let debian = facts("debian", "amd64");
    let identity = |p: &Preparation, v: &str| job(plan(p, Some(v), "h1", &debian).unwrap()).identity;
    let base = identity(&artifacts("https://m.example", None), "v1.36.3");
    assert_eq!(base, identity(&artifacts("https://m.example/", None), "v1.36.3"));
    assert_ne!(base, identity(&artifacts("https://m.example", None), "v1.36.4"));
    assert_ne!(base, identity(&artifacts("https://m2.example", None), "v1.36.3"));
    assert_ne!(base, identity(&artifacts("https://m.example", Some(&"a".repeat(64))), "v1.36.3"));
}

#[test]
fn mode_none_names_both_versions() {
    assert!(judge_versions("kubelet /usr/bin/kubelet v1.36.3\nkubeadm /usr/bin/kubeadm v1.36.3\n", "h1", "v1.36.3").is_ok());
    assert!(judge_versions("kubelet /usr/bin/kubelet v1.36.3+vendor.1\nkubeadm /usr/bin/kubeadm v1.36.3\n", "h1", "v1.36.3").is_ok());
    let err = judge_versions("kubelet /usr/bin/kubelet v1.36.2\nkubeadm /usr/bin/kubeadm v1.36.3\n", "h1", "v1.36.3").unwrap_err();
    assert_eq!(err.reason(), "VersionMismatch");
    let message = err.to_string();
    assert!(message.contains("kubelet on host h1 is v1.36.2 (at /usr/bin/kubelet)") && message.contains("spec.version is v1.36.3"), "{message}");
    let err = judge_versions("kubelet /usr/bin/kubelet v1.36.30\nkubeadm /usr/bin/kubeadm v1.36.3\n", "h1", "v1.36.3").unwrap_err();
    assert!(err.to_string().contains("v1.36.30"), "{err}");
    let err = judge_versions("kubelet /usr/bin/kubelet v1.36.3\nkubeadm - \n", "h1", "v1.36.3").unwrap_err();
    assert!(err.to_string().contains("kubeadm on host h1 is not installed"), "{err}");
    let err = judge_versions("", "h1", "v1.36.3").unwrap_err();
    assert!(err.to_string().contains("kubelet on host h1 is not installed"), "{err}");
}

#[test]
fn the_last_failure_line_is_the_reason() {
    let log = "[capssh] downloading 12 files\ncapssh-prepare: DownloadFailed: first\nnoise\ncapssh-prepare: ChecksumMismatch: v1.36.3/amd64/bin/kubelet has SHA-256 ab, SHA256SUMS says cd; nothing was installed\n";
    let (reason, message) = failure(log).unwrap();
    assert_eq!(reason, "ChecksumMismatch");
    assert!(message.starts_with("v1.36.3/amd64/bin/kubelet has SHA-256 ab"));
    assert_eq!(failure("capssh-prepare: not a reason: x\n"), None);
    assert_eq!(failure("plain log\n"), None);
}

/// Runs `body` after lib.sh, with VERSION set, in a scratch folder; returns stdout.
fn run_lib(dir: &std::path::Path, body: &str) -> (bool, String) {
    let script = format!(
        "set -eu\nVERSION='v1.36.3'\nSTAGING={}\n{LIB}\ncd {}\n{body}\n",
        quote(&dir.join("staging").to_string_lossy()),
        quote(&dir.to_string_lossy())
    );
    let out = Command::new("sh").arg("-c").arg(script).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn an_unchanged_file_is_not_rewritten() {
    let dir = std::env::temp_dir().join(format!("capssh-prepare-lib-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (ok, out) = run_lib(&dir, "put_file ./etc/a.conf 0644 <<EOF\none\nEOF\necho \"changed:$CHANGED\"");
    assert!(ok, "{out}");
    assert!(out.contains("changed: ./etc/a.conf "), "{out}");
    let before = std::fs::metadata(dir.join("etc/a.conf")).unwrap().modified().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let (ok, out) = run_lib(&dir, "put_file ./etc/a.conf 0644 <<EOF\none\nEOF\nchanged ./etc/a.conf || echo untouched");
    assert!(ok, "{out}");
    assert!(out.contains("untouched"), "{out}");
    assert_eq!(std::fs::metadata(dir.join("etc/a.conf")).unwrap().modified().unwrap(), before);
    let (ok, out) = run_lib(&dir, "put_file ./etc/a.conf 0600 <<EOF\ntwo\nEOF\nchanged ./etc/a.conf && echo rewritten");
    assert!(ok && out.contains("rewritten"), "{out}");
    assert_eq!(std::fs::read_to_string(dir.join("etc/a.conf")).unwrap(), "two\n");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn versions_match_exactly_or_with_a_build_suffix() {
    let dir = std::env::temp_dir();
    for (seen, matches) in [("v1.36.3", true), ("v1.36.3-rc.0", true), ("v1.36.3+k1", true), ("v1.36.30", false), ("v1.36.2", false), ("", false)] {
        let (ok, _) = run_lib(&dir, &format!("version_matches '{seen}'"));
        assert_eq!(ok, matches, "{seen}");
    }
}

#[test]
fn downloads_never_put_the_url_on_a_command_line() {
    // fetch() hands curl its URL on stdin: a file:// URL stands in for the mirror here.
    if Command::new("curl").arg("--version").output().is_err() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("capssh-prepare-fetch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("source"), "payload").unwrap();
    let body = format!("DOWNLOADER=curl\nfetch 'file://{}/source' ./out/copy\ncat ./out/copy", dir.display());
    let (ok, out) = run_lib(&dir, &body);
    assert!(ok && out.ends_with("payload"), "{out}");
    assert!(!LIB.contains("curl -fsS -L \"$1\""), "the URL stays off curl's command line");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn plain_http_artifacts_need_the_pin() {
    let debian = facts("debian", "amd64");
    let err = plan(&artifacts("http://u:s3cret@198.18.0.129:8080/mirror", None), Some("v1.36.3"), "h1", &debian).err().unwrap();
    assert_eq!(err.reason(), "InvalidSource");
    let message = err.to_string();
    assert!(message.starts_with("spec.preparation.artifacts.checksumsSHA256: the mirror http://198.18.0.129:8080/mirror is plain http"), "{message}");
    assert!(message.contains("set artifacts.checksumsSHA256") && message.contains("v1.36.3/amd64") && message.contains("https://"), "{message}");
    assert!(!message.contains("s3cret"), "{message}");
    // Pinned, or over https: allowed.
    let pinned = job(plan(&artifacts("http://198.18.0.129:8080/mirror", Some(&"b".repeat(64))), Some("v1.36.3"), "h1", &debian).unwrap());
    assert!(pinned.script.contains(&format!("SUMS_PIN='{}'\n", "b".repeat(64))));
    let https = job(plan(&artifacts("https://mirror.example/k8s", None), Some("v1.36.3"), "h1", &debian).unwrap());
    assert!(https.script.contains("SUMS_PIN=''\n"));
}

#[test]
fn a_plain_http_repository_needs_the_signing_key() {
    let debian = facts("debian", "amd64");
    let err = plan(&packages(Some("http://198.18.0.129:8080")), Some("v1.36.3"), "h1", &debian).err().unwrap();
    assert_eq!(err.reason(), "InvalidSource");
    let message = err.to_string();
    assert!(message.starts_with("spec.preparation.packages.signingKey: the repository http://198.18.0.129:8080 is plain http"), "{message}");
    assert!(message.contains("set packages.signingKey") && message.contains("gpg --armor --export") && message.contains("https://"), "{message}");
    // The same on the RHEL family, whose key would come from the repository too.
    assert_eq!(
        plan(&packages(Some("http://198.18.0.129:8080")), Some("v1.36.3"), "h1", &facts("rocky", "amd64")).err().map(|e| e.reason()),
        Some("InvalidSource")
    );

    // With the key: written from the spec, nothing fetched to decide whom to trust.
    let signed = job(plan(&signed_packages(Some("http://198.18.0.129:8080"), Some(KEY)), Some("v1.36.3"), "h1", &debian).unwrap());
    assert!(signed.script.contains(&format!("SIGNING_KEY='{KEY}'\n")), "the key, quoted, with one final newline");
    assert_parses(&signed.script);
    // https without a key: the repository's Release.key, as before.
    let https = job(plan(&packages(Some("https://pkgs.k8s.io")), Some("v1.36.3"), "h1", &debian).unwrap());
    assert!(https.script.contains("SIGNING_KEY=''\n"));
    assert!(https.script.contains(r#"fetch "$repo/deb/Release.key""#));
    // Windows line ends and surrounding blanks are normalized; the key is the same.
    let crlf = format!("\n  {}  \n", KEY.replace('\n', "\r\n"));
    let normalized = job(plan(&signed_packages(Some("http://r.example"), Some(&crlf)), Some("v1.36.3"), "h1", &debian).unwrap());
    assert!(normalized.script.contains(&format!("SIGNING_KEY='{KEY}'\n")));
}

#[test]
fn a_signing_key_must_be_a_public_key_block() {
    let debian = facts("debian", "amd64");
    let refused = |key: &str| plan(&signed_packages(Some("https://r.example"), Some(key)), Some("v1.36.3"), "h1", &debian).err();
    let private = KEY.replace("PUBLIC KEY", "PRIVATE KEY");
    let err = refused(&private).unwrap();
    assert!(err.to_string().contains("holds a private key"), "{err}");
    for bad in ["", "not a key", "-----BEGIN PGP PUBLIC KEY BLOCK-----\nmDMEZ8zJ", &KEY.replace("mDME", "mDMÉ"), &KEY.replace("mDME", "mD\u{7}E")] {
        assert_eq!(refused(bad).map(|e| e.reason()), Some("InvalidSource"), "{bad:?}");
    }
    let huge = KEY.replace("=abcd", &"A".repeat(70_000));
    assert!(refused(&huge).unwrap().to_string().contains("64 KiB"));
}

#[test]
fn the_signing_key_names_the_job_only_when_set() {
    let debian = facts("debian", "amd64");
    let identity = |key: Option<&str>| job(plan(&signed_packages(Some("https://r.example"), key), Some("v1.36.3"), "h1", &debian).unwrap()).identity;
    // Without a key the identity is what it was before the field existed: a running job is found again.
    assert_eq!(identity(None), ["Packages", "v1.36.3", "amd64", "https://r.example", "containerd"]);
    let with_key = identity(Some(KEY));
    assert_eq!(with_key.len(), 6);
    assert!(with_key[5].starts_with("signingKey sha256:"), "{with_key:?}");
    assert_ne!(with_key, identity(Some(&KEY.replace("abcd", "abce"))));
}

#[test]
fn every_package_manager_command_waits_for_the_lock() {
    let script = PACKAGES;
    let commands: Vec<&str> = script.lines().map(str::trim).filter(|l| !l.starts_with('#')).collect();
    // The command lines' words outside double quotes (messages name apt-get too).
    let unquoted = |line: &str| line.split('"').step_by(2).collect::<Vec<_>>().join("\"\"");
    for line in commands.iter().filter(|l| unquoted(l).contains("apt-get ")) {
        assert!(line.contains(r#"apt-get -o "$lock_timeout""#), "apt-get without the lock timeout: {line}");
    }
    assert!(script.contains(r#"lock_timeout="DPkg::Lock::Timeout=$LOCK_WAIT""#));
    assert!(LIB.contains("LOCK_WAIT=${LOCK_WAIT:-600}"));
    // Each apt-get, apt-mark and dnf/yum run comes after a bounded wait for the other runs' locks.
    let runs = commands
        .iter()
        .filter(|l| l.contains("apt-get -o") || l.contains("apt-mark ") || l.contains("$pm install") || l.contains("$pm downgrade"))
        .count();
    assert_eq!(runs, 6, "apt-get update, apt-mark unhold, apt-get install, apt-mark hold, dnf install and downgrade");
    let waits = commands.iter().filter(|l| **l == "wait_for_package_manager").count();
    assert_eq!(waits, 5, "update, unhold+install, hold; dnf install, downgrade");
}

/// A scratch folder for one test.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("capssh-prepare-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// lib.sh's lock functions over the file `lock` in the scratch folder instead of the host's
/// package manager locks (which other software on this machine may hold).
fn with_test_locks(body: &str) -> String {
    format!("package_manager_locks() {{ echo \"$PWD/lock\"; }}\n: > ./lock\n{body}")
}

/// Starts `flock ./lock sleep SECONDS` in the background and waits until /proc/locks shows it.
/// (`-o`: flock alone holds it, not its sleep.)
const HOLD_WITH_FLOCK: &str =
    r#"hold() { flock -o ./lock sleep "$1" & i=0; while [ -z "$(lock_holder ./lock)" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done; }"#;

#[test]
fn a_held_lock_is_waited_for_and_its_holder_named() {
    if Command::new("flock").arg("--version").output().is_err() {
        return;
    }
    let dir = scratch("lock-wait");
    // Free: no holder, no wait.
    let (ok, out) = run_lib(&dir, &with_test_locks("[ -z \"$(lock_holder ./lock)\" ] && wait_for_package_manager && echo free"));
    assert!(ok && out.trim() == "free", "{out}");
    // Held for about 2 s: waited out.
    let body = format!("{HOLD_WITH_FLOCK}\nLOCK_WAIT=30\nhold 2\nlock_holder ./lock\nwait_for_package_manager\necho done");
    let (ok, out) = run_lib(&dir, &with_test_locks(&body));
    assert!(ok, "{out}");
    assert!(out.lines().next().is_some_and(|l| l.starts_with("process ") && l.ends_with(" (flock)")), "{out}");
    assert!(out.contains("[capssh] waiting for the package manager: ") && out.contains("/lock is held by process "), "{out}");
    assert!(out.contains("[capssh] the package manager is free after ") && out.ends_with("done\n"), "{out}");
    // Held longer than LOCK_WAIT: PackageManagerLocked, naming the holder.
    let body = format!("{HOLD_WITH_FLOCK}\nLOCK_WAIT=2\nhold 5\nwait_for_package_manager\necho not reached");
    let (ok, out) = run_lib(&dir, &with_test_locks(&body));
    assert!(!ok && !out.contains("not reached"), "{out}");
    let (reason, message) = failure(&out).unwrap();
    assert_eq!(reason, "PackageManagerLocked");
    assert!(message.contains("/lock is held by process ") && message.contains("(flock) after 2 s of waiting"), "{message}");
    assert!(message.contains("unattended upgrades"), "{message}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_posix_lock_like_apts_is_seen() {
    // apt and dpkg take POSIX (fcntl) locks; perl stands in for them here.
    if Command::new("perl").arg("-v").output().is_err() {
        return;
    }
    let dir = scratch("posix-lock");
    let hold = r#"perl -e 'use Fcntl; open(my $f, ">>", "./lock") or die; my $l = pack("s s x4 q q i x4", F_WRLCK, 0, 0, 0, 0); fcntl($f, F_SETLK, $l) or die; sleep 30' & perl_pid=$!
i=0; while [ -z "$(lock_holder ./lock)" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
locks_held; kill "$perl_pid""#;
    let (ok, out) = run_lib(&dir, &with_test_locks(hold));
    assert!(ok, "{out}");
    assert!(out.contains("/lock is held by process ") && out.trim().ends_with(" (perl)"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_pid_file_lock_is_held_while_its_process_lives() {
    // dnf 4 and yum: the lock is a file holding the PID of the running one.
    let dir = scratch("pid-lock");
    let body = "sleep 30 & echo $! > ./dnf.pid\nlock_holder ./dnf.pid\nkill $!; wait $! || true\nlock_holder ./dnf.pid; echo end";
    let (ok, out) = run_lib(&dir, body);
    assert!(ok, "{out}");
    let lines: Vec<&str> = out.lines().filter(|l| *l != "Terminated").collect();
    assert!(lines.len() == 2 && lines[0].starts_with("process ") && lines[0].ends_with(" (sleep)") && lines[1] == "end", "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_package_manager_that_gave_up_on_the_lock_is_package_manager_locked() {
    let dir = scratch("pm-failed");
    // apt names the holder itself when its own wait (DPkg::Lock::Timeout) runs out.
    let apt = r#"pm_run apt.log sh -c 'echo "Waiting for cache lock: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 4242 (unattended-upgr)... 600s"; echo "E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 4242 (unattended-upgr)"; exit 100' || pm_failed apt.log "apt-get install failed""#;
    let (ok, out) = run_lib(&dir, &with_test_locks(&format!("mkdir -p \"$STAGING\"\n{apt}")));
    assert!(!ok && out.starts_with("Waiting for cache lock"), "the output stays in the job's log: {out}");
    let (reason, message) = failure(&out).unwrap();
    assert_eq!(reason, "PackageManagerLocked");
    assert!(message.starts_with("apt-get install failed: could not get lock /var/lib/dpkg/lock-frontend. It is held by process 4242 (unattended-upgr) (after waiting up to 600 s)"), "{message}");
    // Any other failure is the package manager's.
    let other = r#"pm_run dnf.log sh -c 'echo "No match for argument: kubelet-1.36.3"; exit 1' || pm_failed dnf.log "dnf could not install kubelet""#;
    let (ok, out) = run_lib(&dir, &with_test_locks(&format!("mkdir -p \"$STAGING\"\n{other}")));
    assert!(!ok, "{out}");
    assert_eq!(failure(&out), Some(("PackageManagerFailed".to_string(), "dnf could not install kubelet".to_string())));
    // pm_run returns the command's status.
    let (ok, out) =
        run_lib(&dir, "mkdir -p \"$STAGING\"\npm_run ok.log sh -c 'echo hi; exit 0' && pm_run bad.log sh -c 'exit 3' || echo \"status $?\"");
    assert!(ok && out == "hi\nstatus 3\n", "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_api_servers_url_rule_accepts_what_the_preparation_accepts() {
    let rule = crate::api::v1alpha1::URL_RULE;
    let pattern = rule.strip_prefix("self.matches('").and_then(|r| r.strip_suffix("')")).expect("a self.matches rule").replace(r"\\", r"\");
    let cel = regex::Regex::new(&pattern).unwrap();
    let samples = [
        "https://pkgs.k8s.io",
        "http://198.18.0.129:8080/mirror/",
        "https://user:p%40ss@mirror.example/a_b~c/(1)",
        "https://[fd00::1]:8443/x",
        "https://",
        "https:///",
        "https:///x",
        "ftp://mirror.example",
        "https://mirror.example/a b",
        "https://mirror.example/?q=1",
        "https://mirror.example/#top",
        "https://mirror.example/\"quoted\"",
        "https://mirror.example/back\\slash",
        "https://mirror.example/{x}",
        "https://mirror.example/café",
        "https://mirror.example/`id`",
    ];
    for url in samples {
        assert_eq!(cel.is_match(url), check_url("url", url).is_ok(), "{url}: the API server and the controller disagree");
    }
}

fn registry_inputs(credentials: Option<(&str, &str)>) -> RegistryInputs {
    RegistryInputs {
        mirrors: vec![("registry.k8s.io".into(), "https://198.18.0.129:5000/".into()), ("docker.io".into(), "https://198.18.0.129:5000".into())],
        ca_pem: Some("-----BEGIN CERTIFICATE-----\nMIIBfake+/=\n-----END CERTIFICATE-----\n".into()),
        credentials: credentials.map(|(u, p)| (u.to_string(), p.to_string())),
        credentials_source: "Secret ns/pull".into(),
    }
}

fn with_registry(mode: Preparation) -> Preparation {
    let mirrors = vec![RegistryMirror { registry: "registry.k8s.io".into(), endpoint: "https://198.18.0.129:5000".into() }];
    Preparation { registry: Some(RegistryMirrors { mirrors, ca_ref: None, credentials_secret_ref: None }), ..mode }
}

#[test]
fn registry_mirrors_reach_the_script_and_the_password_only_as_a_secret() {
    let debian = facts("debian", "amd64");
    let spec = with_registry(artifacts("https://mirror.example", None));
    let inputs = registry_inputs(Some(("puller", "s3cret-pull")));
    let job = job(super::plan(&spec, Some(&inputs), Some("v1.36.3"), "h1", &debian).unwrap());
    assert!(job.script.contains("REGISTRY_MIRRORS='registry.k8s.io https://198.18.0.129:5000\ndocker.io https://198.18.0.129:5000'"));
    assert!(job.script.contains("registry_check_all()") && job.script.contains("registry_install()"), "the registry functions are in the script");
    let auth = base64::engine::general_purpose::STANDARD.encode("puller:s3cret-pull");
    assert!(job.secrets.contains(&auth) && job.secrets.contains(&"s3cret-pull".to_string()), "redacted wherever they show up");
    assert!(!job.identity.iter().any(|part| part.contains("s3cret") || part.contains(&auth)), "the job id is made without the password");
    assert!(!job.script.contains("s3cret-pull"), "the password is in the script only inside the base64 header value");

    // The mirrors name the work: other mirrors, another job; another password, the same job.
    let other = RegistryInputs { mirrors: vec![("quay.io".into(), "https://r.example".into())], ..inputs.clone() };
    let identity = |inputs: &RegistryInputs| job_identity(super::plan(&spec, Some(inputs), Some("v1.36.3"), "h1", &debian).unwrap());
    assert_ne!(identity(&inputs), identity(&other));
    assert_eq!(identity(&inputs), identity(&registry_inputs(Some(("puller", "rotated")))));
    // Without registry settings read, a spec that has them is not planned.
    assert_eq!(reason(super::plan(&spec, None, Some("v1.36.3"), "h1", &debian)), Some("InvalidSource"));
}

fn reason(result: Result<Work, PrepareError>) -> Option<&'static str> {
    result.err().map(|e| e.reason())
}

fn job_identity(work: Work) -> Vec<String> {
    job(work).identity
}

#[test]
fn registry_settings_that_cannot_work_are_refused_before_anything_runs() {
    let debian = facts("debian", "amd64");
    let spec = with_registry(packages(None));
    let refused = |inputs: RegistryInputs| reason(super::plan(&spec, Some(&inputs), Some("v1.36.3"), "h1", &debian));
    let base = registry_inputs(None);
    let twice = RegistryInputs {
        mirrors: vec![("quay.io".into(), "https://a.example".into()), ("quay.io".into(), "https://b.example".into())],
        ..base.clone()
    };
    assert_eq!(refused(twice), Some("InvalidSource"), "one mirror per registry");
    for bad in ["Registry.K8s.io", "quay.io:", "quay.io:123456", "-quay.io", "a/b", ""] {
        assert_eq!(
            refused(RegistryInputs { mirrors: vec![(bad.into(), "https://a.example".into())], ..base.clone() }),
            Some("InvalidSource"),
            "{bad}"
        );
    }
    assert_eq!(refused(RegistryInputs { mirrors: vec![("quay.io".into(), "https://u:p@a.example".into())], ..base.clone() }), Some("InvalidSource"));
    assert_eq!(refused(RegistryInputs { mirrors: vec![("quay.io".into(), "ftp://a.example".into())], ..base.clone() }), Some("InvalidSource"));
    let key = "-----BEGIN PRIVATE KEY-----\nMII\n-----END PRIVATE KEY-----";
    assert_eq!(refused(RegistryInputs { ca_pem: Some(key.into()), ..base.clone() }), Some("InvalidSource"), "a key is not a CA");
    let injected = "-----BEGIN CERTIFICATE-----\nMII\nCAPSSH_CA\n$(reboot)\n-----END CERTIFICATE-----";
    assert_eq!(refused(RegistryInputs { ca_pem: Some(injected.into()), ..base.clone() }), Some("InvalidSource"), "only base64 between the markers");
    assert_eq!(refused(registry_inputs(Some(("user:name", "p")))), Some("InvalidSource"));
    assert_eq!(refused(registry_inputs(Some(("user", "line\nbreak")))), Some("InvalidSource"));
    assert!(super::plan(&spec, Some(&base), Some("v1.36.3"), "h1", &debian).is_ok());
}

/// A one-shot HTTP server on loopback that answers every request with `response`.
fn answering(response: &'static str) -> (std::net::SocketAddr, std::thread::JoinHandle<String>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let thread = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = vec![0u8; 4096];
        let n = stream.read(&mut request).unwrap_or(0);
        stream.write_all(response.as_bytes()).unwrap();
        String::from_utf8_lossy(&request[..n]).to_string()
    });
    (address, thread)
}

/// registry_check, run by a real sh with a real curl against what a registry answers.
fn registry_check(auth: &str, endpoint: &str) -> (String, String) {
    let script = format!(
        "set -eu\nREGISTRY_MIRRORS=x\nREGISTRY_CA=\nREGISTRY_AUTH={}\nREGISTRY_CREDENTIALS='Secret ns/pull'\nREGISTRY_STAMP=\n{LIB}{REGISTRY}\nSTAGING=$(mktemp -d)\nregistry_check quay.io {endpoint} ''\nrm -rf \"$STAGING\"\n",
        crate::bootstrap::shell::quote(auth)
    );
    let out = Command::new("sh").arg("-c").arg(script).output().unwrap();
    (String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string())
}

#[test]
fn the_registry_check_says_what_the_mirror_answered() {
    if Command::new("curl").arg("--version").output().is_err() {
        panic!("curl is needed (make deps installs it)");
    }
    let auth = base64::engine::general_purpose::STANDARD.encode("puller:s3cret");
    let (address, server) = answering("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}");
    let (out, _) = registry_check(&auth, &format!("http://{address}"));
    assert!(out.contains("answers") && !out.contains("capssh-prepare:"), "{out}");
    let request = server.join().unwrap();
    assert!(request.starts_with("GET /v2/ ") && request.contains(&format!("Authorization: Basic {auth}")), "{request}");

    let (address, _server) =
        answering("HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"r\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let (out, _) = registry_check(&auth, &format!("http://{address}"));
    let (reason, message) = failure(&out).unwrap();
    assert_eq!(reason, "RegistryAuthFailed");
    assert!(message.contains("refused the pull credentials from Secret ns/pull") && message.contains(&address.to_string()), "{message}");

    let (address, _server) =
        answering("HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"r\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let (out, _) = registry_check("", &format!("http://{address}"));
    assert!(failure(&out).unwrap().1.contains("asks for credentials"), "{out}");

    let (address, _server) =
        answering("HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"https://auth\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let (out, _) = registry_check(&auth, &format!("http://{address}"));
    assert!(failure(&out).is_none() && out.contains("token authentication"), "{out}");

    let (address, _server) = answering("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let (out, _) = registry_check(&auth, &format!("http://{address}"));
    assert_eq!(failure(&out).unwrap().0, "RegistryUnreachable");

    // Nothing listens: refused at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (out, _) = registry_check(&auth, &format!("http://{closed}"));
    let (reason, message) = failure(&out).unwrap();
    assert_eq!(reason, "RegistryUnreachable");
    assert!(message.contains("does not answer"), "{message}");
}
