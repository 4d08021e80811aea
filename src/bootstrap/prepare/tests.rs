use super::*;
use crate::api::v1alpha1::{ArtifactsSource, PackagesSource};
use std::process::Command;

fn facts(os: &str, arch: &str) -> HostFacts {
    HostFacts { os: os.into(), os_version: "12".into(), arch: arch.into(), ..HostFacts::default() }
}

fn artifacts(url: &str, pin: Option<&str>) -> Preparation {
    Preparation {
        mode: PreparationMode::Artifacts,
        artifacts: Some(ArtifactsSource { url: url.into(), checksums_sha256: pin.map(str::to_string) }),
        packages: None,
    }
}

fn packages(repository: Option<&str>) -> Preparation {
    Preparation {
        mode: PreparationMode::Packages,
        artifacts: None,
        packages: Some(PackagesSource { repository_url: repository.map(str::to_string), container_runtime_package: None }),
    }
}

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
    let artifacts = job(plan(&artifacts("http://198.18.0.129:8080/mirror/", None), Some("v1.36.3"), "h1", &debian).unwrap());
    assert!(artifacts.script.contains("MIRROR_URL='http://198.18.0.129:8080/mirror'\n"), "trailing slash dropped");
    assert!(artifacts.script.contains("VERSION='v1.36.3'\nARCH='amd64'\n"));
    assert_parses(&artifacts.script);
    for (os, family) in [("ubuntu", "debian"), ("rocky", "redhat"), ("fedora", "redhat")] {
        let job = job(plan(&packages(None), Some("v1.36.3"), "h1", &facts(os, "arm64")).unwrap());
        assert!(job.script.contains(&format!("OS_FAMILY='{family}'")));
        assert!(job.script.contains("REPOSITORY_URL='https://pkgs.k8s.io'"));
        assert_parses(&job.script);
    }
    let Work::Verify { script } =
        plan(&Preparation { mode: PreparationMode::None, artifacts: None, packages: None }, Some("v1.36.3"), "h1", &facts("anything", "riscv64"))
            .unwrap()
    else {
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
