//! The host work against an in-memory host: what is started, how often, and what is decided
//! from the host's records (no root, no sshd, no API server).

use super::*;
use crate::ssh::fake::FakeHost;
use crate::ssh::job::JobRecord;
use std::time::Duration;

fn jobs() -> MachineJobs {
    MachineJobs::new("ns", "m-1", "host-1", "m-1-bootstrap")
}

async fn bootstrap_step(host: &FakeHost, jobs: &MachineJobs) -> (NextWork, Option<Progress>) {
    let records = read_records(host, jobs).await.unwrap();
    match next_work(&records) {
        NextWork::AlreadyReset => (NextWork::AlreadyReset, None),
        next => (next, Some(advance_bootstrap(host, &jobs.bootstrap, "echo hi", &records).await.unwrap())),
    }
}

#[tokio::test]
async fn a_bootstrap_starts_once_however_often_it_is_advanced() {
    let host = FakeHost::new();
    let jobs = jobs();
    assert_eq!(bootstrap_step(&host, &jobs).await, (NextWork::Prepare, Some(Progress::Running)));
    for _ in 0..3 {
        assert_eq!(bootstrap_step(&host, &jobs).await, (NextWork::Bootstrap, Some(Progress::Running)));
    }
    assert_eq!(host.starts(&jobs.bootstrap), 1);
    host.finish(&jobs.bootstrap, 0, &[SENTINEL]);
    assert_eq!(bootstrap_step(&host, &jobs).await, (NextWork::Bootstrap, Some(Progress::Succeeded)));
    assert_eq!(host.starts(&jobs.bootstrap), 1);
}

#[tokio::test]
async fn exit_zero_without_the_sentinel_is_a_failure_with_the_log() {
    let host = FakeHost::new();
    let jobs = jobs();
    bootstrap_step(&host, &jobs).await;
    host.finish(&jobs.bootstrap, 0, &[]);
    host.with(|s| s.logs.insert(jobs.bootstrap.clone(), "[ERROR Port-6443]: in use\n".into()));
    let (_, progress) = bootstrap_step(&host, &jobs).await;
    match progress {
        Some(Progress::Failed { reason, log_tail }) => {
            assert!(reason.contains("bootstrap-success.complete is missing"), "{reason}");
            assert!(log_tail.contains("Port-6443"), "{log_tail}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_lost_job_is_a_failure_and_is_never_started_again() {
    let host = FakeHost::new();
    let jobs = jobs();
    bootstrap_step(&host, &jobs).await;
    host.with(|s| s.jobs.insert(jobs.bootstrap.clone(), JobRecord::new(JobState::Lost, Some(Duration::from_secs(90)))));
    let (_, progress) = bootstrap_step(&host, &jobs).await;
    assert!(matches!(progress, Some(Progress::Failed { ref reason, .. }) if reason.contains("process is gone")), "{progress:?}");
    bootstrap_step(&host, &jobs).await;
    assert_eq!(host.starts(&jobs.bootstrap), 1);
}

#[tokio::test]
async fn a_moved_copy_never_bootstraps_a_host_its_source_began_to_reset() {
    let host = FakeHost::new();
    let jobs = jobs();
    bootstrap_step(&host, &jobs).await;
    host.finish(&jobs.bootstrap, 0, &[SENTINEL]);
    // The source's delete started the reset (which removes the bootstrap's records), then the
    // machine was moved: the copy sees the reset and stops.
    host.with(|s| {
        s.jobs.remove(&jobs.bootstrap);
        s.files.clear();
        s.jobs.insert(jobs.reset.clone(), JobRecord::new(JobState::Finished { exit_code: 0 }, Some(Duration::from_secs(5))));
    });
    assert_eq!(bootstrap_step(&host, &jobs).await, (NextWork::AlreadyReset, None));
    assert_eq!(host.starts(&jobs.bootstrap), 1, "the wiped host is not bootstrapped again");
}

#[tokio::test]
async fn a_moved_copy_of_a_finished_machine_judges_the_same_job() {
    let host = FakeHost::new();
    let jobs = jobs();
    bootstrap_step(&host, &jobs).await;
    host.finish(&jobs.bootstrap, 0, &[SENTINEL]);
    // Same namespace, name and bootstrap Secret on the target: the same id, found finished.
    let copy = MachineJobs::new("ns", "m-1", "host-1", "m-1-bootstrap");
    assert_eq!(bootstrap_step(&host, &copy).await, (NextWork::Bootstrap, Some(Progress::Succeeded)));
    assert_eq!(host.starts(&jobs.bootstrap), 1);
}

#[tokio::test]
async fn an_unreachable_host_is_an_error_not_a_verdict() {
    let host = FakeHost::new();
    host.with(|s| s.down = true);
    let err = read_records(&host, &jobs()).await.unwrap_err();
    assert_eq!(err.reason(), "HostUnreachable");
    assert!(err.is_transient());
}

#[tokio::test]
async fn a_reset_is_verified_then_forgotten_and_a_dirty_host_is_named() {
    let host = FakeHost::new();
    let id = reset_job_id("ns", "m-1", "host-1");
    assert_eq!(advance_reset(&host, &id, "host-1").await.unwrap(), Resetting::Running);
    assert_eq!(advance_reset(&host, &id, "host-1").await.unwrap(), Resetting::Running);
    assert_eq!(host.starts(&id), 1);
    host.finish(&id, 0, &[]);
    host.with(|s| s.check_output = " kubelet-running /etc/kubernetes/kubelet.conf\n".into());
    match advance_reset(&host, &id, "host-1").await.unwrap() {
        Resetting::Dirty(problem) => assert!(problem.contains("host-1") && problem.contains("kubelet-running"), "{problem}"),
        other => panic!("{other:?}"),
    }
    assert!(host.with(|s| s.jobs.contains_key(&id)), "a dirty host keeps the reset's record");
    host.with(|s| s.check_output = "\n".into());
    assert_eq!(advance_reset(&host, &id, "host-1").await.unwrap(), Resetting::Clean);
    assert!(!host.with(|s| s.jobs.contains_key(&id)), "a clean host forgets the reset: a new machine of the same name may bootstrap it");
}

#[tokio::test]
async fn a_reset_judges_the_host_not_the_jobs_exit_status() {
    let host = FakeHost::new();
    let id = reset_job_id("ns", "m-1", "host-1");
    advance_reset(&host, &id, "host-1").await.unwrap();
    host.finish(&id, 1, &[]);
    host.with(|s| s.check_output = String::new());
    assert_eq!(advance_reset(&host, &id, "host-1").await.unwrap(), Resetting::Clean);
}

fn about<'a>() -> PrepareContext<'a> {
    PrepareContext { host: "host-1", version: "v1.36.3", mode: "Artifacts", os: "debian", arch: "amd64" }
}

#[tokio::test]
async fn mode_none_only_checks_and_names_both_versions() {
    let host = FakeHost::new();
    let work = Work::Verify { script: "report".into() };
    host.with(|s| s.check_output = "kubelet /usr/bin/kubelet v1.36.2\nkubeadm /usr/bin/kubeadm v1.36.3\n".into());
    match advance_prepare(&host, &work, None, &about()).await.unwrap() {
        Preparing::Mismatch { reason, message } => {
            assert_eq!(reason, "VersionMismatch");
            assert!(message.contains("v1.36.2") && message.contains("v1.36.3"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    host.with(|s| s.check_output = "kubelet /usr/bin/kubelet v1.36.3\nkubeadm /usr/bin/kubeadm v1.36.3\n".into());
    assert!(matches!(advance_prepare(&host, &work, None, &about()).await.unwrap(), Preparing::Done { reason: "Verified", .. }));
    assert!(host.with(|s| s.journal.is_empty()), "mode None starts no job");
}

#[tokio::test]
async fn a_preparation_job_reports_the_scripts_reason_and_redacts_the_mirror_password() {
    let host = FakeHost::new();
    let job = PrepareJob { script: "install".into(), identity: vec!["Artifacts".into()], secrets: vec!["s3cret".into()] };
    let work = Work::Job(job);
    let id = prepare_job_id("ns", "m-1", "host-1", &["Artifacts".to_string()]);
    assert!(matches!(advance_prepare(&host, &work, Some(&id), &about()).await.unwrap(), Preparing::Running { .. }));
    host.finish(&id, 1, &[]);
    host.with(|s| {
        s.logs.insert(id.clone(), "GET https://u:s3cret@mirror/SHA256SUMS\ncapssh-prepare: ChecksumMismatch: kubelet: expected ab, got cd\n".into())
    });
    match advance_prepare(&host, &work, Some(&id), &about()).await.unwrap() {
        Preparing::Failed { reason, message } => {
            assert_eq!(reason, "ChecksumMismatch");
            assert!(message.starts_with("kubelet: expected ab, got cd (host host-1)"), "{message}");
            assert!(!message.contains("s3cret"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(host.starts(&id), 1);
}

#[tokio::test]
async fn a_failed_jobs_log_in_a_message_is_bounded_in_bytes() {
    let host = FakeHost::new();
    let jobs = jobs();
    bootstrap_step(&host, &jobs).await;
    host.finish(&jobs.bootstrap, 1, &[]);
    host.with(|s| s.logs.insert(jobs.bootstrap.clone(), "x".repeat(10 * 1024 * 1024)));
    let (_, progress) = bootstrap_step(&host, &jobs).await;
    let Some(Progress::Failed { log_tail, .. }) = progress else { panic!("{progress:?}") };
    assert!(log_tail.len() <= FAILURE_LOG_BYTES, "{}", log_tail.len());
}

#[test]
fn the_cli_and_the_controller_name_a_host_the_same_way() {
    let metadata = machine_metadata("prod", "rack1-07", "198.18.0.7", Some("node-7"));
    assert_eq!(metadata.values["provider_id"], "ssh://prod/rack1-07");
    assert_eq!(metadata.values["instance_id"], "rack1-07");
    assert_eq!(metadata.values["hostname"], "node-7");
    assert_eq!(metadata.values["local_ipv4"], "198.18.0.7");
    let by_dns = machine_metadata("prod", "rack1-07", "rack1-07.example", None);
    assert_eq!(by_dns.values["hostname"], "rack1-07");
    assert!(!by_dns.values.contains_key("local_ipv4"));
}

#[test]
fn job_ids_are_stable_and_distinct() {
    assert_eq!(jobs(), MachineJobs::new("ns", "m-1", "host-1", "m-1-bootstrap"));
    let other = MachineJobs::new("ns", "m-2", "host-1", "m-2-bootstrap");
    assert_ne!(jobs().bootstrap, other.bootstrap);
    assert_ne!(jobs().reset, other.reset);
    assert!(
        jobs().bootstrap.starts_with("bootstrap-") && jobs().reset.starts_with("cleanup-"),
        "the reset script removes bootstrap-* and prepare-* records"
    );
}

#[tokio::test]
async fn a_bootstraps_success_is_recorded_on_disk_and_survives_a_reboot_emptying_run() {
    let host = FakeHost::new();
    let jobs = jobs();
    bootstrap_step(&host, &jobs).await;
    host.finish(&jobs.bootstrap, 0, &[SENTINEL]);
    assert_eq!(bootstrap_step(&host, &jobs).await.1, Some(Progress::Succeeded));
    assert!(host.with(|s| s.jobs[&jobs.bootstrap].succeeded), "recorded");
    // A reboot empties /run; a moved copy (no status) judges the job again.
    host.with(|s| s.files.clear());
    assert_eq!(bootstrap_step(&host, &jobs).await, (NextWork::Bootstrap, Some(Progress::Succeeded)));
}

#[tokio::test]
async fn a_reset_first_stops_the_machines_running_jobs() {
    let host = FakeHost::new();
    let jobs = jobs();
    bootstrap_step(&host, &jobs).await;
    assert_eq!(host.with(|s| s.jobs[&jobs.bootstrap].state), JobState::Running);
    assert_eq!(advance_reset(&host, &jobs.reset, "host-1").await.unwrap(), Resetting::Running);
    assert_eq!(host.with(|s| s.jobs[&jobs.bootstrap].state), JobState::Finished { exit_code: 143 }, "stopped before the reset started");
    assert_eq!(host.with(|s| s.journal.clone()), vec![jobs.bootstrap.clone(), jobs.reset.clone()]);
}

#[tokio::test]
async fn a_reset_lost_to_a_reboot_runs_again() {
    let host = FakeHost::new();
    let id = reset_job_id("ns", "m-1", "host-1");
    advance_reset(&host, &id, "host-1").await.unwrap();
    host.with(|s| s.jobs.insert(id.clone(), JobRecord::new(JobState::Lost, Some(Duration::from_secs(60)))));
    assert_eq!(advance_reset(&host, &id, "host-1").await.unwrap(), Resetting::Running);
    assert_eq!(host.starts(&id), 2, "idempotent, so started again");
    host.finish(&id, 0, &[]);
    assert_eq!(advance_reset(&host, &id, "host-1").await.unwrap(), Resetting::Clean);
}

#[tokio::test]
async fn a_preparation_lost_to_a_reboot_runs_again_and_a_failed_one_does_not() {
    let host = FakeHost::new();
    let work = Work::Job(PrepareJob { script: "install".into(), identity: vec!["Artifacts".into()], secrets: vec![] });
    let id = prepare_job_id("ns", "m-1", "host-1", &["Artifacts".to_string()]);
    advance_prepare(&host, &work, Some(&id), &about()).await.unwrap();
    host.with(|s| s.jobs.insert(id.clone(), JobRecord::new(JobState::Lost, Some(Duration::from_secs(40)))));
    match advance_prepare(&host, &work, Some(&id), &about()).await.unwrap() {
        Preparing::Running { message } => assert!(message.contains("started again"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(host.starts(&id), 2, "idempotent, so started again");
    host.finish(&id, 0, &[]);
    assert!(matches!(advance_prepare(&host, &work, Some(&id), &about()).await.unwrap(), Preparing::Done { reason: "Prepared", .. }));

    let failed = prepare_job_id("ns", "m-2", "host-1", &["Artifacts".to_string()]);
    advance_prepare(&host, &work, Some(&failed), &about()).await.unwrap();
    host.finish(&failed, 1, &[]);
    for _ in 0..2 {
        assert!(matches!(advance_prepare(&host, &work, Some(&failed), &about()).await.unwrap(), Preparing::Failed { .. }));
    }
    assert_eq!(host.starts(&failed), 1, "a failed preparation is never started again");
}
