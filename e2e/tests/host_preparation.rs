//! Issue 5, host preparation, on real systemd Debian hosts (e2e/src/nodes): see each test.

use capssh_e2e::mirror::{MirrorServer, build_mirror};
use capssh_e2e::tools::artifacts_dir;

const VERSION: &str = "v1.36.3";

/// The mirror is what `capssh artifacts build` makes of hack/tools' binaries, Debian's
/// containerd, runc and CNI plugins, and the control-plane images; it is served over HTTP.
#[test]
fn the_mirror_holds_the_documented_layout() -> anyhow::Result<()> {
    let root = artifacts_dir("host_preparation").join("mirror-layout");
    let mirror = build_mirror(&root, VERSION)?;
    let sums = std::fs::read_to_string(mirror.folder().join("SHA256SUMS"))?;
    let names: Vec<&str> = sums.lines().filter_map(|l| l.split_once("  ").map(|(_, n)| n)).collect();
    for needed in ["bin/kubeadm", "bin/kubelet", "bin/kubectl", "bin/containerd", "bin/containerd-shim-runc-v2", "bin/ctr", "bin/runc", "cni/bridge", "cni/loopback"] {
        assert!(names.contains(&needed), "SHA256SUMS lists no {needed}:\n{sums}");
    }
    assert_eq!(names.iter().filter(|n| n.starts_with("images/")).count(), 5, "{sums}");
    let server = MirrorServer::start(&mirror.root, "127.0.0.1:0".parse()?)?;
    let body = capssh_e2e::manager::http_get(server.address.port(), &format!("/{VERSION}/amd64/SHA256SUMS"))?;
    assert_eq!(body, sums);
    Ok(())
}
