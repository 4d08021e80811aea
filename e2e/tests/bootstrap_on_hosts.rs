//! Bootstrap data run on real sshd hosts through the `capssh` CLI (the controller's code path):
//! cloud-init semantics byte-exact, success judged by exit status and the Cluster API sentinel,
//! refusals before anything runs, and no secret in anything capssh prints.

use base64::Engine;
use capssh_e2e::hosts::{HostFarm, PASSWORD_SUDO_USER, SUDO_USER};
use capssh_e2e::tools::capssh;
use std::io::Write;
use std::process::{Command, Output};

/// Runs `capssh <args> --address ... --identity ... --host-key ...` against a farm host, with
/// debug logging on (so the secrets check sees everything capssh could log).
fn capssh_on(farm: &HostFarm, host: usize, user: &str, args: &[&str]) -> Output {
    capssh_command(farm, host, user, args).output().expect("running capssh")
}

fn capssh_command(farm: &HostFarm, host: usize, user: &str, args: &[&str]) -> Command {
    let h = &farm.hosts[host];
    let mut command = Command::new(capssh());
    command
        .args(["--log-format", "text"])
        .args(args)
        .args(["--address", &h.address.to_string(), "--user", user])
        .arg("--identity")
        .arg(&farm.client_key.ed25519.private_key_path)
        .args(["--host-key", &h.host_key_public])
        .env("RUST_LOG", "debug");
    command
}

fn write_data(farm: &HostFarm, name: &str, data: &str) -> std::path::PathBuf {
    let path = farm.dir.join(name);
    std::fs::File::create(&path).unwrap().write_all(data.as_bytes()).unwrap();
    path
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn gzip_base64(bytes: &[u8]) -> String {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    base64::engine::general_purpose::STANDARD.encode(encoder.finish().unwrap())
}

#[test]
fn cloud_config_runs_as_cloud_init_would() {
    let farm = HostFarm::start("bootstrap-semantics", 1).unwrap();
    let binary: Vec<u8> = (0..=255u8).collect();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&binary);
    let gz = gzip_base64(b"compressed\ncontent\n");
    let data = format!(
        r#"## template: jinja
#cloud-config
write_files:
-   path: /etc/kubernetes/nested/deeper/plain.conf
    permissions: '0600'
    content: |
      provider={{{{ ds.meta_data.provider_id }}}}
      host={{{{ ds.meta_data.local_hostname }}}}
-   path: /etc/kubernetes/binary.bin
    encoding: b64
    content: {b64}
-   path: /etc/kubernetes/gz.txt
    encoding: gzip+base64
    owner: {SUDO_USER}:{SUDO_USER}
    permissions: '0640'
    content: {gz}
-   path: /var/lib/kubelet/appended
    content: "first\n"
-   path: /var/lib/kubelet/appended
    append: true
    content: "second\n"
runcmd:
  - echo one >> /tmp/order
  - "false"
  - [sh, -c, "echo two >> /tmp/order"]
  - echo three >> /tmp/order
  - mkdir -p /run/cluster-api && echo success > /run/cluster-api/bootstrap-success.complete
"#
    );
    let file = write_data(&farm, "semantics.yaml", &data);
    let out = capssh_on(&farm, 0, "root", &["bootstrap", "run", "--data", file.to_str().unwrap(), "--metadata", "provider_id=ssh://ns/h0"]);
    assert!(out.status.success(), "bootstrap run failed: {}", text(&out));

    let exec = |shell: &str| farm.exec_ok(0, shell).unwrap();
    assert_eq!(exec("cat /etc/kubernetes/nested/deeper/plain.conf"), format!("provider=ssh://ns/h0\nhost={}\n", farm.hosts[0].name));
    assert_eq!(exec("stat -c '%a %U:%G' /etc/kubernetes/nested/deeper/plain.conf"), "600 root:root\n");
    let copied = farm.exec(0, "cat /etc/kubernetes/binary.bin").unwrap().stdout;
    assert_eq!(copied, binary, "b64 content must be written byte-exact");
    assert_eq!(exec("cat /etc/kubernetes/gz.txt"), "compressed\ncontent\n", "gzip+base64 is base64-decoded, then gunzipped");
    assert_eq!(exec("stat -c '%a %U:%G' /etc/kubernetes/gz.txt"), format!("640 {SUDO_USER}:{SUDO_USER}\n"));
    assert_eq!(exec("cat /var/lib/kubelet/appended"), "first\nsecond\n");
    // runcmd: in order, a failing command does not stop the next, each status is logged.
    assert_eq!(exec("cat /tmp/order"), "one\ntwo\nthree\n");
    let log = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(log.contains("[capssh] runcmd 2/5 exited with status 1"), "{log}");
    assert!(log.contains("[capssh] runcmd 5/5 exited with status 0"), "{log}");

    // Running it again re-attaches to the finished job: nothing runs twice.
    let again = capssh_on(&farm, 0, "root", &["bootstrap", "run", "--data", file.to_str().unwrap(), "--metadata", "provider_id=ssh://ns/h0"]);
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!(exec("cat /tmp/order"), "one\ntwo\nthree\n", "the runcmd ran exactly once");
}

#[test]
fn a_failed_kubeadm_line_is_a_failed_bootstrap_with_its_output() {
    let farm = HostFarm::start("bootstrap-failure", 1).unwrap();
    // As CABPK writes it: the sentinel only follows a successful kubeadm.
    let data = r#"#cloud-config
runcmd:
  - "echo preflight ok"
  - 'sh -c "echo [ERROR FileAvailable]: /etc/kubernetes/manifests/kube-apiserver.yaml already exists >&2; exit 1" && echo success > /run/cluster-api/bootstrap-success.complete'
  - "echo post command ran"
"#;
    let file = write_data(&farm, "failing.yaml", data);
    let out = capssh_on(&farm, 0, "root", &["bootstrap", "run", "--data", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(8), "{}", text(&out));
    let all = text(&out);
    assert!(all.contains("bootstrap failed"), "{all}");
    assert!(all.contains("kube-apiserver.yaml already exists"), "the command's output is shown: {all}");
    assert!(farm.exec(0, "test -e /run/cluster-api/bootstrap-success.complete").unwrap().status.code() == Some(1));
}

#[test]
fn unsupported_keys_are_refused_before_anything_runs() {
    let farm = HostFarm::start("bootstrap-refusal", 1).unwrap();
    let data = "#cloud-config\nntp:\n  enabled: true\n  servers: [pool.ntp.org]\nruncmd:\n  - touch /run/ran\n";
    let file = write_data(&farm, "ntp.yaml", data);
    let out = capssh_on(&farm, 0, "root", &["bootstrap", "run", "--data", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));
    assert!(text(&out).contains("`ntp`"), "the refusal names the key: {}", text(&out));
    let touched = farm.exec(0, "ls /var/lib/capssh/jobs 2>/dev/null; test -e /run/ran && echo ran").unwrap();
    assert!(touched.stdout.is_empty(), "nothing may run: {}", String::from_utf8_lossy(&touched.stdout));

    let no_header = write_data(&farm, "plain.yaml", "runcmd:\n  - touch /run/ran\n");
    let out = capssh_on(&farm, 0, "root", &["bootstrap", "run", "--data", no_header.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));
}

#[test]
fn no_secret_from_bootstrap_data_reaches_anything_capssh_prints() {
    let farm = HostFarm::start("bootstrap-secrets", 1).unwrap();
    let private_key = farm.client_key.unauthorized.private_key_pem.clone();
    let token = "k3x9qa.0123456789abcdef";
    let certificate_key = "4c5b1c0a9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a";
    let indented: String = private_key.lines().map(|l| format!("      {l}\n")).collect();
    let data = format!(
        "#cloud-config\nwrite_files:\n-   path: /etc/kubernetes/pki/sa.key\n    permissions: '0600'\n    content: |\n{indented}runcmd:\n  - echo \"kubeadm join 198.18.0.100:6443 --token {token} --certificate-key {certificate_key}\"\n  - cat /etc/kubernetes/pki/sa.key\n  - \"false\"\n"
    );
    let file = write_data(&farm, "secrets.yaml", &data);
    let out = capssh_on(&farm, 0, "root", &["bootstrap", "run", "--data", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(8), "no sentinel, so a failure: {}", text(&out));
    let shown = text(&out);
    assert!(shown.contains("[capssh] runcmd 3/3 exited with status 1"), "the log is shown: {shown}");
    for secret in [token, certificate_key] {
        assert!(!shown.contains(secret), "{secret} leaked: {shown}");
    }
    for line in private_key.lines().filter(|l| l.len() > 16 && !l.starts_with("-----")) {
        assert!(!shown.contains(line), "a private key line leaked: {shown}");
    }
    // The host has the real content: redaction is only for what people see.
    assert_eq!(farm.exec_ok(0, "cat /etc/kubernetes/pki/sa.key").unwrap(), private_key);
}

#[test]
fn hosts_check_prints_facts_or_the_reason() {
    let farm = HostFarm::start("hosts-check", 2).unwrap();
    let out = capssh_on(&farm, 0, SUDO_USER, &["hosts", "check"]);
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(report["facts"]["hostname"], farm.hosts[0].name);
    assert_eq!(report["hostKeyFingerprint"], farm.hosts[0].host_key_fingerprint);
    assert!(report["facts"]["cpus"].as_i64().unwrap() > 0);

    // Host 1's key expected on host 0: exit 4 with both fingerprints.
    let h0 = &farm.hosts[0];
    let out = Command::new(capssh())
        .args(["hosts", "check", "--address", &h0.address.to_string()])
        .arg("--identity")
        .arg(&farm.client_key.ed25519.private_key_path)
        .args(["--host-key", &farm.hosts[1].host_key_public])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(text(&out).contains(&h0.host_key_fingerprint) && text(&out).contains(&farm.hosts[1].host_key_fingerprint), "{}", text(&out));

    let out = capssh_on(&farm, 0, PASSWORD_SUDO_USER, &["hosts", "check"]);
    assert_eq!(out.status.code(), Some(6), "sudo needs a password: {}", text(&out));
}

#[test]
fn reset_run_resets_a_bootstrapped_host_with_the_controllers_reset_and_verification() {
    let farm = HostFarm::start("reset-cli", 1).unwrap();
    let data = "#cloud-config\nruncmd:\n  - mkdir -p /etc/kubernetes/manifests /run/cluster-api\n  - echo pod > /etc/kubernetes/manifests/etcd.yaml\n  - echo conf > /etc/kubernetes/kubelet.conf\n  - echo success > /run/cluster-api/bootstrap-success.complete\n";
    let file = write_data(&farm, "node.yaml", data);
    let out = capssh_on(&farm, 0, "root", &["bootstrap", "run", "--data", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));

    let identity = ["--namespace", "prod", "--host-name", "rack1-07", "--machine", "m-1"];
    let out = capssh_on(&farm, 0, "root", &[&["reset", "run"][..], &identity].concat());
    assert!(out.status.success(), "reset run failed: {}", text(&out));
    assert!(text(&out).contains("verified clean"), "{}", text(&out));
    let left = farm.exec_ok(0, "ls /etc/kubernetes/manifests /etc/kubernetes/kubelet.conf /run/cluster-api 2>/dev/null; true").unwrap();
    assert!(left.trim().is_empty(), "the reset left: {left}");
    // The controller's job id for that machine on that host: the journal shows it once, and a
    // clean reset forgets its record (a new machine of the same name may use the host).
    let id = capssh::hosts::work::reset_job_id("prod", "m-1", "rack1-07");
    let journal = farm.exec_ok(0, "cat /var/lib/capssh/jobs/journal").unwrap();
    assert_eq!(journal.matches(&id).count(), 1, "{journal}");
    assert!(farm.exec(0, &format!("ls -d /var/lib/capssh/jobs/{id}")).unwrap().stdout.is_empty(), "the record is forgotten");
    assert!(farm.exec(0, "ls -d /var/lib/capssh/jobs/bootstrap-*").unwrap().stdout.is_empty(), "the bootstrap's record went with the reset");
}

/// Runs capssh as `capssh_on` does, and returns its peak resident memory too (KiB, wait4's
/// ru_maxrss for that one process).
fn capssh_on_measured(farm: &HostFarm, host: usize, user: &str, args: &[&str]) -> (Output, u64) {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    #[expect(clippy::zombie_processes, reason = "reaped below by wait4, which also reports its peak memory")]
    let mut child = capssh_command(farm, host, user, args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running capssh");
    let mut stderr_pipe = child.stderr.take().expect("stderr");
    let stderr = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        stderr_pipe.read_to_end(&mut bytes).map(|_| bytes)
    });
    let mut stdout = Vec::new();
    child.stdout.take().expect("stdout").read_to_end(&mut stdout).unwrap();
    let stderr = stderr.join().unwrap().unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child, which std has not reaped.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::wait4(pid, &mut status, 0, &mut usage) }, pid, "wait4");
    (Output { status: std::process::ExitStatus::from_raw(status), stdout, stderr }, usage.ru_maxrss as u64)
}

#[test]
fn a_gzip_bomb_is_refused_before_anything_runs_and_capssh_does_not_balloon() {
    let farm = HostFarm::start("bootstrap-bomb", 1).unwrap();
    // About 1 MiB of gzip inflating to about 1 GiB of zeros: 1 MiB gzip members back to back.
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(&vec![0u8; 1 << 20]).unwrap();
    let member = encoder.finish().unwrap();
    let bomb = member.repeat((1 << 20) / member.len());
    let data = format!(
        "#cloud-config\nwrite_files:\n- path: /etc/kubernetes/bomb\n  encoding: gzip+base64\n  content: {}\nruncmd:\n  - touch /run/ran\n",
        base64::engine::general_purpose::STANDARD.encode(&bomb)
    );
    let file = write_data(&farm, "bomb.yaml", &data);
    let started = std::time::Instant::now();
    let (out, peak_kib) = capssh_on_measured(&farm, 0, "root", &["bootstrap", "run", "--data", file.to_str().unwrap()]);
    eprintln!("a {}-byte gzip bomb: refused in {:?}, capssh's peak RSS {} MiB", bomb.len(), started.elapsed(), peak_kib / 1024);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));
    let shown = text(&out);
    assert!(shown.contains("/etc/kubernetes/bomb") && shown.contains("16 MiB"), "the refusal names the file and the limit: {shown}");
    // Inflated, the bomb alone would be 1 GiB.
    assert!(peak_kib < 256 * 1024, "capssh grew to {} MiB", peak_kib / 1024);
    let touched =
        farm.exec(0, "ls /var/lib/capssh/jobs 2>/dev/null; test -e /run/ran && echo ran; test -e /etc/kubernetes/bomb && echo wrote").unwrap();
    assert!(touched.stdout.is_empty(), "nothing may run: {}", String::from_utf8_lossy(&touched.stdout));
}
