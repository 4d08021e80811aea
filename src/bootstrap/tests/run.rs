//! Generated scripts run by the local /bin/sh, on files in a temporary directory only (no
//! users, no system paths).

use super::*;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("capssh-bootstrap-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
    fn path(&self, rel: &str) -> String {
        self.0.join(rel).to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Ran {
    status: i32,
    stdout: String,
    stderr: String,
}

fn run(data: &str) -> Ran {
    let job = crate::bootstrap::plan(data.as_bytes(), Format::CloudConfig, &meta()).unwrap();
    let output = Command::new("sh").arg("-c").arg(&job.script).output().expect("sh runs");
    Ran {
        status: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn whoami() -> (String, String) {
    let id = |flag: &str| String::from_utf8(Command::new("id").arg(flag).output().unwrap().stdout).unwrap().trim().to_string();
    (id("-un"), id("-gn"))
}

fn mode(path: &str) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn write_files_then_runcmd() {
    let dir = TempDir::new("files");
    let (user, group) = whoami();
    let blob: Vec<u8> = (0..=255u8).collect();
    let gz = {
        use std::io::Write as _;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(&blob).unwrap();
        e.finish().unwrap()
    };
    use base64::Engine as _;
    let gz64 = base64::engine::general_purpose::STANDARD.encode(gz);
    std::fs::write(dir.path("existing.conf"), "first\n").unwrap();
    let data = format!(
        "## template: jinja\n#cloud-config\nwrite_files:\n\
         -   path: {blob}\n    encoding: \"gzip+base64\"\n    owner: {user}:{group}\n    permissions: '0640'\n    content: |\n      {gz64}\n\
         -   path: {existing}\n    append: true\n    owner: {user}:{group}\n    content: |\n      second\n\
         -   path: {quoted}\n    owner: {user}:{group}\n    content: \"{{{{ ds.meta_data.provider_id }}}}\"\n\
         runcmd:\n  - cd {dir} && echo $((1+1)) > two\n  - [sh, -c, \"exit 7\"]\n  - test -s two\n  - cat two > three\n",
        blob = dir.path("deep/er/blob.bin"),
        existing = dir.path("existing.conf"),
        quoted = dir.path("it's \"odd\" $HOME.txt"),
        dir = dir.path(""),
    );
    let ran = run(&data);
    assert_eq!(ran.status, 0, "{}{}", ran.stdout, ran.stderr);
    assert_eq!(std::fs::read(dir.path("deep/er/blob.bin")).unwrap(), blob);
    assert_eq!(mode(&dir.path("deep/er/blob.bin")), 0o640);
    assert_eq!(mode(&dir.path("deep/er")), 0o755);
    assert_eq!(std::fs::read_to_string(dir.path("existing.conf")).unwrap(), "first\nsecond\n");
    assert_eq!(mode(&dir.path("existing.conf")), 0o644);
    assert_eq!(std::fs::read_to_string(dir.path("it's \"odd\" $HOME.txt")).unwrap(), "ssh://default/host-1");
    // `cd` carried from item 1 to item 3; item 2 failing did not stop the others.
    assert_eq!(std::fs::read_to_string(dir.path("three")).unwrap(), "2\n");
    for line in [
        "[capssh] runcmd 1/4 exited with status 0\n",
        "[capssh] runcmd 2/4 exited with status 7\n",
        "[capssh] runcmd 4/4 exited with status 0\n",
        "[capssh] runcmd finished with status 0\n",
    ] {
        assert!(ran.stdout.contains(line), "{line:?} missing from {}", ran.stdout);
    }
    // No temporary files left behind.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path("deep/er")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");
}

#[test]
fn runcmd_status_is_the_last_items_and_exit_ends_runcmd() {
    let dir = TempDir::new("exit");
    let marker = dir.path("marker");
    let ran = run("#cloud-config\nruncmd:\n- \"true\"\n- \"false\"\n");
    assert_eq!(ran.status, 1);
    assert!(ran.stdout.contains("[capssh] runcmd 2/2 exited with status 1\n"), "{}", ran.stdout);

    let ran = run(&format!("#cloud-config\nruncmd:\n- echo a\n- exit 3\n- touch {marker}\n"));
    assert_eq!(ran.status, 3, "{}", ran.stdout);
    assert!(!Path::new(&marker).exists());
    assert!(ran.stdout.contains("[capssh] runcmd 2/3 ended the runcmd script with status 3\n"), "{}", ran.stdout);
    assert!(ran.stdout.contains("[capssh] runcmd finished with status 3\n"), "{}", ran.stdout);

    // $? as the next item sees it is the previous item's, even under set -e (the kubeadm line
    // is an && list, which set -e does not stop).
    let ran = run("#cloud-config\nruncmd:\n- set -e\n- false && echo never\n- echo \"previous=$?\"\n");
    assert_eq!(ran.status, 0, "{}", ran.stdout);
    assert!(ran.stdout.contains("previous=1\n"), "{}", ran.stdout);

    // A construct spanning items gets one status line, after it ends.
    let ran = run("#cloud-config\nruncmd:\n- if true; then\n- echo inside\n- fi\n- cat <<EOF\n- heredoc line\n- EOF\n");
    assert_eq!(ran.status, 0, "{}", ran.stdout);
    assert!(ran.stdout.contains("inside\n[capssh] runcmd 1-3/6 exited with status 0\n"), "{}", ran.stdout);
    assert!(ran.stdout.contains("heredoc line\n[capssh] runcmd 4-6/6 exited with status 0\n"), "{}", ran.stdout);
}

#[test]
fn failures_before_runcmd_end_the_job() {
    let dir = TempDir::new("fail");
    let marker = dir.path("marker");
    std::fs::write(dir.path("file"), "x").unwrap();
    // A parent that is a file.
    let ran = run(&format!("#cloud-config\nwrite_files:\n- path: {}\n  owner: '-1'\nruncmd:\n- touch {marker}\n", dir.path("file/child")));
    assert_eq!(ran.status, 1);
    assert!(ran.stderr.contains("[capssh] write_files 1/1: could not create the directory"), "{}", ran.stderr);
    assert!(!Path::new(&marker).exists());

    // bootcmd must succeed; it runs before write_files.
    let ran = run(&format!("#cloud-config\nbootcmd:\n- echo \"id=$INSTANCE_ID\"\n- exit 4\nwrite_files:\n- path: {marker}\n  owner: '-1'\n"));
    assert_eq!(ran.status, 1);
    assert!(ran.stdout.contains("id=default-host-1\n"), "{}", ran.stdout);
    assert!(ran.stderr.contains("[capssh] bootcmd exited with status 4"), "{}", ran.stderr);
    assert!(!Path::new(&marker).exists());

    // An unknown owner.
    let ran = run(&format!("#cloud-config\nwrite_files:\n- path: {marker}\n  owner: no-such-user-capssh:root\n"));
    assert_eq!(ran.status, 1);
    assert!(ran.stderr.contains("[capssh] write_files 1/1: could not give"), "{}", ran.stderr);
    assert!(!Path::new(&marker).exists());
    assert_eq!(std::fs::read_dir(dir.path("")).unwrap().count(), 1, "temporary file left behind");
}

#[test]
fn no_runcmd_ends_with_zero() {
    let ran = run("#cloud-config\n");
    assert_eq!(ran.status, 0);
    assert!(ran.stdout.contains("[capssh] done: no runcmd"));
}
