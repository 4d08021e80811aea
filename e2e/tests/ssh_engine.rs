//! The SSH engine against real OpenSSH sshd hosts (e2e/src/hosts.rs): commands, uploads,
//! host-key pinning, authentication, sudo, and host-side jobs that survive losing the connection.

use capssh::ssh::hostkey::HostKeyPolicy;
use capssh::ssh::job::{JobSpec, Progress, Start};
use capssh::ssh::{Credentials, Endpoint, Session, SshError, Target, Timeouts};
use capssh_e2e::hosts::{ClientKey, HostFarm, PASSWORD_SUDO_USER, SUDO_USER};
use std::time::Duration;

fn target(farm: &HostFarm, host: usize, user: &str, key: &ClientKey, pins: &[String]) -> Target {
    Target {
        host: Endpoint {
            address: farm.hosts[host].address.to_string(),
            port: farm.hosts[host].port,
            user: user.to_string(),
            credentials: Credentials::Key { private_key: key.private_key_pem.clone(), passphrase: None },
            host_keys: HostKeyPolicy::parse(pins, false).unwrap(),
        },
        bastion: None,
    }
}

fn pinned(farm: &HostFarm, host: usize) -> Vec<String> {
    vec![farm.hosts[host].host_key_public.clone()]
}

async fn root_session(farm: &HostFarm, host: usize) -> Session {
    let target = target(farm, host, "root", &farm.client_key.ed25519, &pinned(farm, host));
    Session::connect(&target, &Timeouts::default()).await.expect("root session")
}

const MINUTE: Duration = Duration::from_secs(60);

/// Processes of one host (its network namespace) whose command line contains `pattern`.
/// Hosts share the machine's PID space, so pgrep/pkill would see every host's processes.
fn host_processes(farm: &HostFarm, host: usize, pattern: &str) -> Vec<u32> {
    let out = std::process::Command::new("ip").args(["netns", "pids", &farm.hosts[host].netns]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|pid| pid.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmdline).replace('\0', " ").contains(pattern)
        })
        .collect()
}

fn kill_host_processes(farm: &HostFarm, host: usize, pattern: &str, except: &str) {
    for pid in host_processes(farm, host, pattern) {
        let cmdline = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default()).into_owned();
        if except.is_empty() || !cmdline.contains(except) {
            unsafe_kill(pid);
        }
    }
}

fn unsafe_kill(pid: u32) {
    let _ = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
}

#[tokio::test]
async fn commands_report_exit_status_streams_large_output_and_time_out() {
    let farm = HostFarm::start("ssh-commands", 1).unwrap();
    let session = root_session(&farm, 0).await;

    let out = session.run("echo hi; echo oops >&2; exit 3", None, MINUTE).await.unwrap();
    assert_eq!((out.status, out.stdout_text().as_str(), out.stderr_text().as_str()), (3, "hi\n", "oops\n"));

    // Output streams as it comes: the sink sees several chunks, in order.
    let mut chunks = Vec::new();
    let out = session
        .run_streaming("for i in 1 2 3; do echo $i; sleep 0.2; done", None, MINUTE, |is_stderr, chunk| {
            chunks.push((is_stderr, String::from_utf8_lossy(chunk).into_owned()))
        })
        .await
        .unwrap();
    assert_eq!(out.stdout_text(), "1\n2\n3\n");
    assert!(chunks.len() >= 3, "output arrived in one piece: {chunks:?}");

    // 10 MiB stream through whole; what is kept in memory is bounded (the rest only counted).
    let mut streamed = 0;
    let big = session.run_streaming("head -c 10485760 /dev/zero | tr '\\0' x", None, MINUTE, |_, chunk| streamed += chunk.len()).await.unwrap();
    assert_eq!(streamed, 10 * 1024 * 1024);
    assert_eq!(big.stdout.len() + big.dropped, 10 * 1024 * 1024);
    assert_eq!(big.stdout.len(), capssh::ssh::MAX_OUTPUT_BYTES);
    assert!(big.stdout.iter().all(|b| *b == b'x'));

    // A command over its time is killed on the host, not just abandoned.
    let err = session.run("echo $$ > /tmp/slow.pid; sleep 300", None, Duration::from_secs(2)).await.expect_err("the command must time out");
    assert!(matches!(err, SshError::CommandTimeout { .. }), "{err}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let alive = farm.exec(0, "kill -0 $(cat /tmp/slow.pid) 2>/dev/null && echo alive || echo gone").unwrap();
    assert_eq!(String::from_utf8_lossy(&alive.stdout).trim(), "gone");
    assert!(host_processes(&farm, 0, "sleep 300").is_empty(), "the remote sleep survived the timeout");

    // Uploads go over stdin and land byte-exact with their mode.
    let payload: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    session.upload("/tmp/upload/blob", &payload, 0o640).await.expect_err("the parent folder does not exist yet");
    session.run_checked("mkdir -p /tmp/upload", None, MINUTE).await.unwrap();
    session.upload("/tmp/upload/blob", &payload, 0o640).await.unwrap();
    let check = farm.exec_ok(0, "stat -c %a /tmp/upload/blob; sha256sum < /tmp/upload/blob").unwrap();
    let expected = format!("640\n{}  -\n", sha256_hex(&payload));
    assert_eq!(check, expected);
}

fn sha256_hex(bytes: &[u8]) -> String {
    let mut child = std::process::Command::new("sha256sum").stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().to_string()
}

#[tokio::test]
async fn host_keys_credentials_and_sudo_are_enforced() {
    let mut farm = HostFarm::start("ssh-trust", 2).unwrap();
    let keys = farm.client_key.clone();
    let keys = &keys;

    // Every supported key type logs in, and probing works through sudo for a non-root user.
    for key in keys.authorized() {
        let session = Session::connect(&target(&farm, 0, "root", key, &pinned(&farm, 0)), &Timeouts::default())
            .await
            .unwrap_or_else(|err| panic!("{} key: {err}", key.algorithm));
        session.close().await;
    }
    let sudo = Session::connect(&target(&farm, 0, SUDO_USER, &keys.ed25519, &pinned(&farm, 0)), &Timeouts::default()).await.unwrap();
    let facts = sudo.probe().await.expect("probing through sudo -n");
    assert_eq!(facts.hostname, farm.hosts[0].name);
    assert!(facts.cpus > 0 && facts.memory_bytes > 0 && !facts.kernel.is_empty());

    // sudo that wants a password fails clearly.
    let pw = Session::connect(&target(&farm, 0, PASSWORD_SUDO_USER, &keys.ed25519, &pinned(&farm, 0)), &Timeouts::default()).await.unwrap();
    let err = pw.probe().await.expect_err("sudo needs a password");
    assert!(matches!(err, SshError::SudoNeedsPassword { .. }), "{err}");
    assert!(err.to_string().contains("NOPASSWD"), "{err}");

    // A wrong client key is an authentication error.
    let err = Session::connect(&target(&farm, 0, "root", &keys.unauthorized, &pinned(&farm, 0)), &Timeouts::default())
        .await
        .err()
        .expect("an unauthorized key is refused");
    assert!(matches!(err, SshError::AuthFailed { .. }), "{err}");

    // Host 1's key pinned for host 0: refused, naming both fingerprints.
    let err = Session::connect(&target(&farm, 0, "root", &keys.ed25519, &pinned(&farm, 1)), &Timeouts::default())
        .await
        .err()
        .expect("a wrong host key is refused");
    let message = err.to_string();
    assert!(matches!(err, SshError::HostKeyMismatch { .. }), "{message}");
    assert!(message.contains(&farm.hosts[1].host_key_fingerprint), "{message}");
    assert!(message.contains(&farm.hosts[0].host_key_fingerprint), "{message}");

    // The same after the host is reinstalled with a new key.
    let old_pin = pinned(&farm, 0);
    farm.replace_host_key(0).unwrap();
    let err = Session::connect(&target(&farm, 0, "root", &keys.ed25519, &old_pin), &Timeouts::default())
        .await
        .err()
        .expect("a changed host key is refused");
    assert!(err.to_string().contains(&farm.hosts[0].host_key_fingerprint), "{err}");

    // Trust on first use accepts an unpinned host and reports its key for pinning.
    let mut tofu = target(&farm, 0, "root", &keys.ed25519, &[]);
    tofu.host.host_keys.trust_on_first_use = true;
    let session = Session::connect(&tofu, &Timeouts::default()).await.unwrap();
    assert!(session.trusted_on_first_use());
    assert_eq!(session.host_key_fingerprint(), farm.hosts[0].host_key_fingerprint);
    assert!(farm.hosts[0].host_key_public.starts_with(session.host_key_openssh().split(' ').take(2).collect::<Vec<_>>().join(" ").as_str()));

    // Unreachable hosts time out instead of hanging.
    farm.set_link(1, false).unwrap();
    let timeouts = Timeouts { connect: Duration::from_secs(2), ..Default::default() };
    let err = Session::connect(&target(&farm, 1, "root", &keys.ed25519, &pinned(&farm, 1)), &timeouts)
        .await
        .err()
        .expect("an unplugged host is unreachable");
    assert!(err.is_transient() && err.reason() == "HostUnreachable", "{err}");
}

/// A job whose side effects can be counted on the host: it appends to a counter, waits, then
/// writes a marker. Run exactly once means one line in the counter.
const COUNTED_JOB: &str = "echo run >> /var/lib/capssh/counter\nsleep 3\necho finished\ntouch /run/job-done\n";

#[tokio::test]
async fn a_job_survives_losing_the_connection_and_runs_once() {
    let farm = HostFarm::start("ssh-jobs", 1).unwrap();
    let job = JobSpec { id: "count-1", script: COUNTED_JOB.as_bytes(), required: &[] };

    // Start it, then lose the client (as a crashed controller would).
    let first = root_session(&farm, 0).await;
    assert_eq!(first.start_job(&job).await.unwrap(), Start::Started);
    drop(first);

    // Kill every SSH session process on the host too (the listener stays).
    farm.drop_sessions(0).unwrap();

    // A new connection re-attaches; starting again is a no-op.
    let second = root_session(&farm, 0).await;
    assert_eq!(second.start_job(&job).await.unwrap(), Start::AlreadyStarted);
    let mut polls = 0;
    loop {
        match second.advance_job(&job, &["/run/job-done"], 20).await.unwrap() {
            Progress::Running => {
                polls += 1;
                assert!(polls < 60, "the job never finished");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Progress::Succeeded => break,
            Progress::Failed { reason, log_tail } => panic!("{reason}: {log_tail}"),
        }
    }
    assert!(polls > 0, "the job was still running when re-attached");
    assert_eq!(farm.exec_ok(0, "cat /var/lib/capssh/counter").unwrap(), "run\n", "the job ran exactly once");
    assert_eq!(second.job_log_tail("count-1", 5).await.unwrap(), "finished\n");
    let mode = farm.exec_ok(0, "stat -c %a /var/lib/capssh/jobs /var/lib/capssh/jobs/count-1").unwrap();
    assert_eq!(mode, "700\n700\n", "job folders are private");

    // Concurrent starts of a new job: exactly one starts it.
    let job2 = JobSpec { id: "count-2", script: COUNTED_JOB.as_bytes(), required: &[] };
    let (a, b) = (root_session(&farm, 0).await, root_session(&farm, 0).await);
    let (ra, rb) = tokio::join!(a.start_job(&job2), b.start_job(&job2));
    let starts = [ra.unwrap(), rb.unwrap()];
    assert_eq!(starts.iter().filter(|s| **s == Start::Started).count(), 1, "{starts:?}");

    // Success needs the required paths too; a job that exits 0 without them failed.
    let job3 = JobSpec { id: "no-sentinel", script: b"echo did nothing\n", required: &[] };
    let verdict = loop {
        match a.advance_job(&job3, &["/run/cluster-api/bootstrap-success.complete"], 20).await.unwrap() {
            Progress::Running => tokio::time::sleep(Duration::from_millis(200)).await,
            done => break done,
        }
    };
    match verdict {
        Progress::Failed { reason, log_tail } => {
            assert!(reason.contains("bootstrap-success.complete is missing"), "{reason}");
            assert_eq!(log_tail, "did nothing\n");
        }
        other => panic!("expected a failure, got {other:?}"),
    }

    // Success is recorded on disk the moment a job exits 0 with its required paths there: the
    // path gone afterwards (a reboot empties /run) does not turn it into a failure. Without the
    // path at exit, nothing is recorded.
    let proof = format!("/run/capssh-e2e-proof-{}", std::process::id());
    let proving = format!("touch {proof}\n");
    let job5 = JobSpec { id: "proof-1", script: proving.as_bytes(), required: &[proof.as_str()] };
    assert_eq!(a.start_job(&job5).await.unwrap(), Start::Started);
    let job6 = JobSpec { id: "proof-2", script: b"true\n", required: &["/run/capssh-e2e-never-made"] };
    assert_eq!(a.start_job(&job6).await.unwrap(), Start::Started);
    capssh_e2e::manager::eventually(20, "both jobs to exit", || async {
        farm.exec_ok(0, "cat /var/lib/capssh/jobs/proof-1/exit /var/lib/capssh/jobs/proof-2/exit").ok().filter(|e| e == "0\n0\n")
    })
    .await
    .unwrap();
    farm.exec_ok(0, &format!("rm {proof}")).unwrap();
    assert_eq!(a.advance_job(&job5, job5.required, 5).await.unwrap(), Progress::Succeeded, "success outlives its proof");
    assert!(farm.exec(0, "test -e /var/lib/capssh/jobs/proof-2/succeeded").unwrap().status.code() == Some(1));
    assert!(matches!(a.advance_job(&job6, job6.required, 5).await.unwrap(), Progress::Failed { .. }));

    // A job whose process vanished is reported as lost, never restarted.
    let job4 = JobSpec { id: "vanishing", script: b"sleep 300\n", required: &[] };
    assert_eq!(a.start_job(&job4).await.unwrap(), Start::Started);
    kill_host_processes(&farm, 0, "capssh-job", "");
    tokio::time::sleep(Duration::from_millis(300)).await;
    match a.advance_job(&job4, &[], 5).await.unwrap() {
        Progress::Failed { reason, .. } => assert!(reason.contains("process is gone"), "{reason}"),
        other => panic!("expected lost, got {other:?}"),
    }
}

#[tokio::test]
async fn passwords_and_jump_hosts_work() {
    let farm = HostFarm::start("ssh-password-bastion", 1).unwrap();
    // Password login is an explicit opt-in; capssh-pw is the farm's password user.
    let mut password = target(&farm, 0, PASSWORD_SUDO_USER, &farm.client_key.ed25519, &pinned(&farm, 0));
    password.host.credentials = Credentials::Password(farm.sudo_password.clone());
    let session = Session::connect(&password, &Timeouts::default()).await.expect("password login");
    session.close().await;
    password.host.credentials = Credentials::Password("wrong".into());
    let err = Session::connect(&password, &Timeouts::default()).await.err().expect("a wrong password is refused");
    assert!(matches!(err, SshError::AuthFailed { method: "password", .. }), "{err}");

    // Through a jump host (h0's sshd forwarding to h0's own address), each with its own pin.
    let mut jump = target(&farm, 0, "root", &farm.client_key.ed25519, &pinned(&farm, 0));
    jump.bastion = Some(jump.host.clone());
    let session = Session::connect(&jump, &Timeouts::default()).await.expect("connecting through the bastion");
    assert_eq!(session.run_checked("hostname", None, MINUTE).await.unwrap().stdout_text().trim(), farm.hosts[0].name);
    session.close().await;
    let mut bad_bastion = jump.clone();
    bad_bastion.bastion.as_mut().unwrap().host_keys =
        HostKeyPolicy::parse(&["SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU".to_string()], false).unwrap();
    let err = Session::connect(&bad_bastion, &Timeouts::default()).await.err().expect("the bastion's key is checked");
    assert!(matches!(err, SshError::HostKeyMismatch { .. }), "{err}");
}

/// What a host can throw at the engine: endless output, a reboot under a running job, a full
/// disk under a finishing one, and a job that must be stopped with everything it started.
#[tokio::test]
async fn output_is_bounded_and_jobs_survive_reboots_full_disks_and_stop_as_a_group() {
    use capssh::ssh::MAX_OUTPUT_BYTES;
    use capssh::ssh::job::JobState;
    let farm = HostFarm::start("engine-hardening", 1).unwrap();
    let s = root_session(&farm, 0).await;

    // 50 MB on one line: the first MAX_OUTPUT_BYTES are kept, the rest only counted.
    let out = s.run("head -c 50000000 /dev/zero | tr '\\0' x", None, MINUTE).await.unwrap();
    assert_eq!(out.status, 0);
    assert_eq!(out.stdout.len(), MAX_OUTPUT_BYTES);
    assert_eq!(out.dropped, 50_000_000 - MAX_OUTPUT_BYTES);

    // A job still running when its host "reboots": its recorded boot is not this boot, so its
    // PID (reused after a real reboot) is not taken for the job.
    s.start_job(&JobSpec { id: "boot-1", script: b"sleep 313\n", required: &[] }).await.unwrap();
    assert_eq!(s.job_status("boot-1", &[]).await.unwrap().state, JobState::Running);
    farm.exec_ok(0, "echo 00000000-0000-0000-0000-000000000000 > /var/lib/capssh/jobs/boot-1/boot").unwrap();
    assert_eq!(s.job_status("boot-1", &[]).await.unwrap().state, JobState::Lost);
    kill_host_processes(&farm, 0, "sleep 313", "");

    // A real full disk: the job's folder is a 256 kB file system that the job fills, so its exit
    // status cannot be written. That is reported as such, not polled for ever.
    farm.exec_ok(0, "mkdir -p /var/lib/capssh/jobs/disk-1 && mount -t tmpfs -o size=256k capssh-full /var/lib/capssh/jobs/disk-1").unwrap();
    let fill = JobSpec { id: "disk-1", script: b"head -c 10000000 /dev/zero > /var/lib/capssh/jobs/disk-1/fill\nexit 0\n", required: &[] };
    let progress = loop {
        match s.advance_job(&fill, &[], 20).await.unwrap() {
            Progress::Running => tokio::time::sleep(Duration::from_millis(200)).await,
            done => break done,
        }
    };
    farm.exec_ok(0, "umount /var/lib/capssh/jobs/disk-1").unwrap();
    assert!(matches!(&progress, Progress::Failed { reason, .. } if reason.contains("disk full")), "{progress:?}");

    // Stopping: a bootstrap job and what it started (a child in the background) go as a group.
    let group = JobSpec { id: "bootstrap-stop-1", script: b"sleep 311 &\nsleep 312\nwait\n", required: &[] };
    s.start_job(&group).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(host_processes(&farm, 0, "sleep 31").len(), 2, "both sleeps run");
    let stopped = s.stop_jobs(Duration::from_secs(5)).await.unwrap();
    assert_eq!(stopped, vec!["bootstrap-stop-1".to_string()]);
    assert!(host_processes(&farm, 0, "sleep 31").is_empty(), "the whole group is gone when stop_jobs returns");
    assert_eq!(s.job_status("bootstrap-stop-1", &[]).await.unwrap().state, JobState::Finished { exit_code: 143 });
    assert!(s.stop_jobs(Duration::from_secs(5)).await.unwrap().is_empty(), "nothing left to stop");
}
