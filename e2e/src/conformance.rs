//! Kubernetes conformance tests, as far as they run here: `e2e.test` built from
//! `k8s.io/kubernetes` at the pinned version (hack/tools), run against a capssh-made cluster.
//!
//! The tests pull their images by upstream name (registry.k8s.io/e2e-test-images/…), which the
//! nodes get through the registry mirror. Only agnhost (and pause) can be built here; the tests
//! that need another test image are skipped by name ([`SKIPPED_FOR_IMAGES`]) and reported as
//! skipped.

use crate::tools::tool;
use std::path::Path;
use std::process::Command;

/// What runs: the `[Conformance]` tests of sig-network (Services, DNS, Pod networking, proxy)
/// and the basic sig-node Pod tests.
pub const FOCUS: &str = r"\[sig-network\].*\[Conformance\]|\[sig-node\] Pods .*\[Conformance\]";

/// The sample CI runs (a few minutes): Pod-to-Pod traffic, a Service, the API server's proxy.
pub const SAMPLE: &str =
    r"\[sig-network\] Networking Granular Checks: Pods should function for intra-pod communication: http \[NodeConformance\] \[Conformance\]";

/// What `CAPSSH_E2E_CONFORMANCE` asks for: unset or `sample`, the [`SAMPLE`]; `full`, every test
/// of [`FOCUS`]; `off`, none; anything else is a focus regex of its own.
pub fn focus_from_env() -> anyhow::Result<Option<String>> {
    Ok(match std::env::var("CAPSSH_E2E_CONFORMANCE").ok().as_deref() {
        None | Some("") | Some("sample") => Some(SAMPLE.to_string()),
        Some("full") => Some(FOCUS.to_string()),
        Some("off") => None,
        Some(focus) => {
            regex::Regex::new(focus).map_err(|err| anyhow::anyhow!("CAPSSH_E2E_CONFORMANCE is not a regex: {err}"))?;
            Some(focus.to_string())
        }
    })
}

/// Tests skipped because their images cannot be built here, and why.
pub const SKIPPED_FOR_IMAGES: &[(&str, &str)] = &[
    (
        r"\[sig-network\] DNS should (provide DNS for the cluster|provide /etc/hosts entries|provide DNS for services|provide DNS for pods for|provide DNS for ExternalName|resolve DNS of partial)",
        "glibc-dns-testing 2.0.0 (a Dockerfile image with dig) is not built here",
    ),
    (
        r"should create Endpoints for Pods matching a Service|should create Endpoints and EndpointSlices for Pods matching a Service",
        "nginx is not built here",
    ),
    (
        r"should run through the lifecycle of Pods and PodStatus",
        "agnhost 2.55 (the previous agnhost this test pins) is not built here: k8s.io/kubernetes v1.36.3 holds 2.63.0",
    ),
    (
        r"should contain environment variables for services|should support remote command execution over websockets|should support retrieving logs from the container over websockets|should be set on Pods with matching resource requests and limits|pod generation should start at 1 and increment per update",
        "busybox 1.37.0-1 is not built here (Debian 12's static busybox is 1.35 and crashes in wget)",
    ),
];

/// The counts of one run, from its JUnit report.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub passed: usize,
    pub failed: Vec<String>,
    pub skipped: usize,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "conformance: passed {} / failed {} / skipped {}", self.passed, self.failed.len(), self.skipped)?;
        for name in &self.failed {
            writeln!(f, "  failed: {name}")?;
        }
        Ok(())
    }
}

/// Runs e2e.test with `focus` (and [`SKIPPED_FOR_IMAGES`] skipped) against the cluster of
/// `kubeconfig`, its output and JUnit report in `report_dir`.
pub fn run(kubeconfig: &Path, focus: &str, report_dir: &Path) -> anyhow::Result<Summary> {
    std::fs::create_dir_all(report_dir)?;
    let skip = SKIPPED_FOR_IMAGES.iter().map(|(pattern, _)| *pattern).collect::<Vec<_>>().join("|");
    let log = std::fs::File::create(report_dir.join("e2e.log"))?;
    let status = Command::new(tool("e2e.test"))
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .arg("--provider=skeleton")
        .arg(format!("--report-dir={}", report_dir.display()))
        .arg(format!("--ginkgo.focus={focus}"))
        .arg(format!("--ginkgo.skip={skip}"))
        .arg("--ginkgo.no-color")
        .arg("--ginkgo.timeout=3h")
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()?;
    let report = std::fs::read_to_string(report_dir.join("junit_01.xml"))
        .map_err(|err| anyhow::anyhow!("e2e.test ({status}) wrote no junit_01.xml in {}: {err}", report_dir.display()))?;
    Ok(summarize(&report, &regex::Regex::new(focus)?))
}

/// Counts the tests of a JUnit report: failed (named), passed, and skipped among those `focus`
/// selects (the report lists every test of the suite; the ones outside the focus, and the
/// suite's own setup nodes, are not counted).
pub fn summarize(junit: &str, focus: &regex::Regex) -> Summary {
    let mut summary = Summary::default();
    for case in junit.split("<testcase ").skip(1) {
        let body = case.split("</testcase>").next().unwrap_or(case);
        let name = body.split("name=\"").nth(1).and_then(|rest| rest.split('"').next()).unwrap_or("?").to_string();
        if !name.starts_with("[It] ") {
            continue;
        }
        if body.contains("<failure") || body.contains("<error") {
            summary.failed.push(name);
        } else if body.contains("<skipped") || body.contains("status=\"skipped\"") {
            if focus.is_match(&name) {
                summary.skipped += 1;
            }
        } else {
            summary.passed += 1;
        }
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_junit_report_is_counted_by_outcome() {
        let junit = r#"<testsuites><testsuite>
<testcase name="[SynchronizedBeforeSuite]" classname="Kubernetes e2e suite" status="passed" time="1"></testcase>
<testcase name="[It] [sig-network] Services should serve a basic endpoint [Conformance]" classname="Kubernetes e2e suite" status="passed" time="12"></testcase>
<testcase name="[It] [sig-network] DNS should provide DNS for services [Conformance]" classname="Kubernetes e2e suite" status="skipped" time="0"><skipped message="skipped"></skipped></testcase>
<testcase name="[It] [sig-storage] Secrets should be consumable [Conformance]" classname="Kubernetes e2e suite" status="skipped" time="0"><skipped message="skipped"></skipped></testcase>
<testcase name="[It] [sig-node] Pods should be submitted and removed [Conformance]" classname="Kubernetes e2e suite" status="failed" time="30"><failure message="timed out">x</failure></testcase>
</testsuite></testsuites>"#;
        assert_eq!(
            summarize(junit, &regex::Regex::new(FOCUS).unwrap()),
            Summary { passed: 1, failed: vec!["[It] [sig-node] Pods should be submitted and removed [Conformance]".into()], skipped: 1 }
        );
    }

    #[test]
    fn every_skip_pattern_is_a_valid_regex_that_leaves_the_focus_something() {
        for (pattern, why) in SKIPPED_FOR_IMAGES {
            assert!(regex::Regex::new(pattern).is_ok(), "{pattern} ({why})");
        }
        let focus = regex::Regex::new(FOCUS).unwrap();
        assert!(focus.is_match("[sig-network] Services should serve a basic endpoint from pods [Conformance]"));
        assert!(!focus.is_match("[sig-storage] Secrets should be consumable [Conformance]"));
    }
}
