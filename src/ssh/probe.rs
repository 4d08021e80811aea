//! Facts about a host, read over SSH (and, as a side effect, proof that sudo works).

use super::{Session, SshError};
use crate::api::v1alpha1::HostFacts;
use crate::bootstrap::scripts::PROBE;
use std::time::Duration;

impl Session {
    pub async fn probe(&self) -> Result<HostFacts, SshError> {
        let output = self.run_checked(PROBE, None, Duration::from_secs(30)).await?;
        let facts = parse_facts(&output.stdout_text());
        if facts.1 != Some(0) {
            return Err(SshError::Protocol { target: self.target().to_string(), reason: "commands do not run as root".into() });
        }
        Ok(facts.0)
    }
}

/// Parses the probe's `key=value` lines; the second value is the uid commands ran as.
fn parse_facts(text: &str) -> (HostFacts, Option<u32>) {
    let mut facts = HostFacts::default();
    let mut uid = None;
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else { continue };
        let value = value.trim().to_string();
        match key {
            "os" => facts.os = value,
            "os_version" => facts.os_version = value,
            "arch" => facts.arch = kubernetes_arch(&value).to_string(),
            "kernel" => facts.kernel = value,
            "hostname" => facts.hostname = value,
            "cpus" => facts.cpus = value.parse().unwrap_or(0),
            "memory_kib" => facts.memory_bytes = value.parse::<i64>().unwrap_or(0) * 1024,
            "uid" => uid = value.parse().ok(),
            _ => {}
        }
    }
    (facts, uid)
}

/// `uname -m` to the names Kubernetes uses.
fn kubernetes_arch(machine: &str) -> &str {
    match machine {
        "x86_64" | "amd64" => "amd64",
        "aarch64" | "arm64" => "arm64",
        "armv7l" | "armv7" => "arm",
        "ppc64le" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_output_becomes_facts() {
        let (facts, uid) = parse_facts("os=debian\nos_version=12\narch=x86_64\nkernel=6.1.0\nhostname=h1\ncpus=2\nmemory_kib=1024\nuid=0\n");
        assert_eq!(uid, Some(0));
        assert_eq!(facts.os, "debian");
        assert_eq!(facts.arch, "amd64");
        assert_eq!(facts.cpus, 2);
        assert_eq!(facts.memory_bytes, 1024 * 1024);
    }
}
