//! The kubeadm-capable test nodes themselves: systemd boots, sshd answers with the node's own host
//! key, nodes reach each other and the gateway, and nothing of a node is left after the farm.

use capssh_e2e::nodes::{GATEWAY, NodeFarm};
use std::process::Command;

#[test]
fn nodes_boot_with_systemd_and_answer_over_ssh() -> anyhow::Result<()> {
    let farm = NodeFarm::start("nodes", 2)?;
    for (i, node) in farm.nodes.iter().enumerate() {
        assert_eq!(farm.exec_ok(i, "systemctl is-system-running")?.trim(), "running");
        assert_eq!(farm.exec_ok(i, "hostname")?.trim(), node.name);
        // containerd and runc can make cgroups: each node's hierarchies are its own and writable.
        farm.exec_ok(i, "mkdir /sys/fs/cgroup/memory/probe && rmdir /sys/fs/cgroup/memory/probe")?;
        // systemd runs the legacy layout and tracks its units in name=systemd (the kubelet's slices go there).
        let layout = farm.exec_ok(i, "grep cgroup /proc/self/mountinfo; ls /sys/fs/cgroup/systemd/system.slice; cat /proc/cmdline")?;
        assert!(!layout.contains("/sys/fs/cgroup/unified") && layout.contains("ssh.service"), "cgroup layout of {}:\n{layout}", node.name);
        assert!(farm.exec_ok(i, "command -v containerd kubeadm || true")?.trim().is_empty(), "a bare node has no runtime or kubeadm");

        let known_hosts = farm.logs.join(format!("known_hosts-{i}"));
        std::fs::write(&known_hosts, format!("{} {}\n", node.address, node.host_key_public))?;
        let out = Command::new("ssh")
            .args(["-F", "/dev/null", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
            .arg("-i")
            .arg(&farm.client_key.private_key_path)
            .arg(format!("root@{}", node.address))
            .arg("hostname")
            .output()?;
        assert!(out.status.success(), "ssh to {}: {}", node.name, String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), node.name);
    }
    // Layer 2 between nodes, and the gateway (the management side) from a node.
    let other = farm.nodes[1].address;
    farm.exec_ok(0, &format!("bash -c 'exec 3<>/dev/tcp/{other}/22'"))?;
    farm.exec_ok(0, &format!("ip route get 1.1.1.1 | grep -q 'via {GATEWAY}'"))?;
    let names: Vec<String> = farm.nodes.iter().map(|n| n.netns.clone()).collect();
    drop(farm);
    let netns = String::from_utf8(Command::new("ip").args(["netns", "list"]).output()?.stdout)?;
    for name in names {
        assert!(!netns.lines().any(|l| l.split_whitespace().next() == Some(name.as_str())), "{name} left behind");
    }
    assert!(!std::path::Path::new("/sys/fs/cgroup/memory/capssh-node-0").exists(), "cgroup left behind");
    Ok(())
}
