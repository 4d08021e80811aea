//! Tests of the bootstrap translator against real CABPK output (testdata/, see its README).

mod cloudinit;
mod ignition;
mod limits;
mod properties;
mod run;

use super::script::{FileWrite, Last, Plan, Step};
use super::{BootstrapError, Format, MachineMetadata};

pub(super) const INIT: &str = include_str!("../testdata/init.yaml");
pub(super) const JOIN: &str = include_str!("../testdata/join.yaml");
pub(super) const JOIN_NTP: &str = include_str!("../testdata/join-ntp.yaml");
pub(super) const JOIN_DISK: &str = include_str!("../testdata/join-disk.yaml");
pub(super) const JOIN_IGNITION: &str = include_str!("../testdata/join-ignition.json");

pub(super) fn meta() -> MachineMetadata {
    let mut meta = MachineMetadata::default();
    for (key, value) in [
        ("hostname", "node-1.example"),
        ("local_hostname", "node-1"),
        ("instance_id", "default-host-1"),
        ("provider_id", "ssh://default/host-1"),
        ("local_ipv4", "198.18.0.21"),
    ] {
        meta.values.insert(key.to_string(), value.to_string());
    }
    meta
}

/// The plan for cloud-config data.
pub(super) fn cloud_plan(data: &str) -> Result<Plan, BootstrapError> {
    let document = super::cloudinit::document(data, &meta())?;
    super::cloudinit::parse(&document, &meta())
}

pub(super) fn file<'p>(plan: &'p Plan, path: &str) -> &'p FileWrite {
    plan.files().find(|f| f.path == path).unwrap_or_else(|| panic!("no file {path}"))
}

pub(super) fn runcmd(plan: &Plan) -> &[String] {
    match &plan.last {
        Some(Last::Runcmd(items)) => items,
        _ => panic!("no runcmd"),
    }
}

/// A short name for each step, in order.
pub(super) fn step_names(plan: &Plan) -> Vec<String> {
    plan.steps
        .iter()
        .map(|step| match step {
            Step::Commands { module, .. } => module.to_string(),
            Step::WriteFile(f) => format!("file {}", f.path),
            Step::User(u) => format!("user {}", u.name),
            Step::Systemctl { args, .. } => format!("systemctl {}", args.join(" ")),
        })
        .collect()
}

/// `sh -n`: the script parses.
pub(super) fn assert_parses(script: &str) {
    use std::io::Write as _;
    let mut child =
        std::process::Command::new("sh").arg("-n").stdin(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().expect("sh runs");
    child.stdin.take().expect("stdin").write_all(script.as_bytes()).expect("write script");
    let output = child.wait_with_output().expect("sh -n ends");
    assert!(output.status.success(), "sh -n: {}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn format_from_secret() {
    assert_eq!(Format::from_secret(None).unwrap(), Format::CloudConfig);
    assert_eq!(Format::from_secret(Some("cloud-config")).unwrap(), Format::CloudConfig);
    assert_eq!(Format::from_secret(Some("ignition")).unwrap(), Format::Ignition);
    let err = Format::from_secret(Some("shell")).unwrap_err();
    assert!(matches!(err, BootstrapError::InvalidFormat { .. }));
    assert!(err.to_string().contains("`shell`"), "{err}");
}

#[test]
fn plan_returns_a_script_and_secrets() {
    let job = super::plan(INIT.as_bytes(), Format::CloudConfig, &meta()).unwrap();
    assert!(job.script.starts_with("#!/bin/sh\n"));
    assert_parses(&job.script);
    // No file content or token in clear text in the script (contents travel as base64).
    assert!(!job.script.contains("PRIVATE KEY"));
    assert!(!job.script.contains("q8k3vx.x8f3kd9s0a2m1n4b"));
    let plan = cloud_plan(INIT).unwrap();
    for f in plan.files().filter(|f| f.path.starts_with("/etc/kubernetes/pki/")) {
        assert!(job.secrets.contains(&String::from_utf8(f.content.clone()).unwrap()), "{} not in secrets", f.path);
    }
    assert!(job.secrets.contains(&"q8k3vx.x8f3kd9s0a2m1n4b".to_string()));

    let job = super::plan(JOIN_IGNITION.as_bytes(), Format::Ignition, &meta()).unwrap();
    assert_parses(&job.script);
    assert!(job.secrets.contains(&"abcdef.0123456789abcdef".to_string()), "{:?}", job.secrets);
    assert!(job.secrets.iter().any(|s| s.starts_with("$6$rounds=4096$")), "{:?}", job.secrets);

    assert!(matches!(super::plan(b"\xff\xfe", Format::CloudConfig, &meta()), Err(BootstrapError::NotUtf8)));
    assert!(!format!("{job:?}").contains("abcdef."), "Debug shows no secrets");
}

#[test]
fn large_files_fit() {
    // A bootstrap Secret holds at most 1 MiB.
    let line = "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\n";
    let big = line.repeat(900_000 / line.len());
    let indented: String = big.lines().map(|l| format!("      {l}\n")).collect();
    let data = format!("## template: jinja\n#cloud-config\nwrite_files:\n-   path: /opt/big\n    content: |\n{indented}runcmd:\n  - \"true\"\n");
    let started = std::time::Instant::now();
    let plan = cloud_plan(&data).unwrap();
    assert_eq!(file(&plan, "/opt/big").content, big.as_bytes());
    let job = super::plan(data.as_bytes(), Format::CloudConfig, &meta()).unwrap();
    assert!(job.script.len() > big.len());
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "{:?}", started.elapsed());
}

/// A secret that must never show in an error message.
const SECRET: &str = "s3cr3t-c0ntent-value";

#[test]
fn errors_never_quote_secret_content() {
    let cases = [
        // Broken YAML right after a secret.
        format!("#cloud-config\nwrite_files:\n- path: /a\n  content: {SECRET}\n   bad: [\n"),
        format!("#cloud-config\nwrite_files:\n- path: /a\n  content: {SECRET}\n- path: /a\n  content: x\n  path: /b\n"),
        format!("#cloud-config\nwrite_files:\n- path: /a\n  encoding: base64\n  content: '{SECRET}!'\n"),
        format!("#cloud-config\nwrite_files:\n- path: /a\n  encoding: gzip\n  content: {SECRET}\n"),
        format!("#cloud-config\nruncmd:\n- [echo, {SECRET}, true]\n"),
        format!("#cloud-config\nruncmd: {SECRET}\n"),
        format!("#cloud-config\nusers:\n- name: a\n  passwd: [{SECRET}]\n"),
        format!("#cloud-config\nusers:\n- name: a\n  sudo: \"{SECRET}\\nx\"\n"),
        format!("## template: jinja\n#cloud-config\nruncmd:\n- echo {SECRET} {{{{ v1.nope }}}}\n"),
        format!("{SECRET}\n#cloud-config\n"),
    ];
    for data in &cases {
        let err = super::plan(data.as_bytes(), Format::CloudConfig, &meta()).expect_err(data);
        let message = format!("{err} {err:?}");
        assert!(!message.contains("c0ntent"), "{data:?} gave {message}");
    }
    let ignition = [
        format!(
            "{{\"ignition\":{{\"version\":\"2.3.0\"}},\"storage\":{{\"files\":[{{\"path\":\"/a\",\"contents\":{{\"source\":\"data:,{SECRET}%zz\"}}}}]}}}}"
        ),
        format!("{{\"ignition\":{{\"version\":\"2.3.0\"}},\"x\":\"{SECRET}\""),
    ];
    for data in &ignition {
        let err = super::plan(data.as_bytes(), Format::Ignition, &meta()).expect_err(data);
        let message = format!("{err} {err:?}");
        assert!(!message.contains("c0ntent"), "{data:?} gave {message}");
    }
}

#[test]
#[ignore = "prints the job scripts for the fixtures: cargo test -p capssh --lib print_scripts -- --ignored --nocapture"]
fn print_scripts() {
    for (data, format) in [(JOIN, Format::CloudConfig), (JOIN_IGNITION, Format::Ignition)] {
        let job = super::plan(data.as_bytes(), format, &meta()).unwrap();
        println!("{}\n----- secrets: {}", job.script, job.secrets.len());
    }
}

#[test]
#[ignore = "dev aid: CAPSSH_PLAN_INPUT=data CAPSSH_PLAN_OUTPUT=script [CAPSSH_PLAN_FORMAT=ignition] cargo test -p capssh --lib plan_file -- --ignored"]
fn plan_file() {
    let input = std::env::var("CAPSSH_PLAN_INPUT").expect("CAPSSH_PLAN_INPUT");
    let output = std::env::var("CAPSSH_PLAN_OUTPUT").expect("CAPSSH_PLAN_OUTPUT");
    let format = Format::from_secret(std::env::var("CAPSSH_PLAN_FORMAT").ok().as_deref()).unwrap();
    let job = super::plan(&std::fs::read(input).unwrap(), format, &meta()).unwrap();
    std::fs::write(output, job.script).unwrap();
}
