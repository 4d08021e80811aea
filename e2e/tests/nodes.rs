//! The kubeadm-capable test nodes themselves: systemd boots, sshd answers with the node's own host
//! key, nodes reach each other and the gateway, a reboot looks like one from an SSH session, and
//! nothing of a node is left after the farm.

use capssh_e2e::nodes::{GATEWAY, NodeFarm};
use std::process::{Command, Stdio};

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

        assert_eq!(ssh_ok(&farm, i, "hostname")?.trim(), node.name);
    }
    // Layer 2 between nodes, and the gateway (the management side) from a node.
    let other = farm.nodes[1].address;
    farm.exec_ok(0, &format!("bash -c 'exec 3<>/dev/tcp/{other}/22'"))?;
    farm.exec_ok(0, &format!("ip route get 1.1.1.1 | grep -q 'via {GATEWAY}'"))?;
    a_reboot_is_a_reboot_as_capssh_sees_one(&farm)?;
    let names: Vec<String> = farm.nodes.iter().map(|n| n.netns.clone()).collect();
    drop(farm);
    let netns = String::from_utf8(Command::new("ip").args(["netns", "list"]).output()?.stdout)?;
    for name in names {
        assert!(!netns.lines().any(|l| l.split_whitespace().next() == Some(name.as_str())), "{name} left behind");
    }
    assert!(!std::path::Path::new("/sys/fs/cgroup/memory/capssh-node-0").exists(), "cgroup left behind");
    Ok(())
}

/// `ssh root@node-i COMMAND` with the node's host key pinned (StrictHostKeyChecking).
fn ssh(farm: &NodeFarm, i: usize, command: &str) -> anyhow::Result<Command> {
    let node = &farm.nodes[i];
    let known_hosts = farm.logs.join(format!("known_hosts-{i}"));
    std::fs::write(&known_hosts, format!("{} {}\n", node.address, node.host_key_public))?;
    let mut ssh = Command::new("ssh");
    ssh.args(["-F", "/dev/null", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .arg("-i")
        .arg(&farm.client_key.private_key_path)
        .arg(format!("root@{}", node.address))
        .arg(command)
        .stdin(Stdio::null());
    Ok(ssh)
}

fn ssh_ok(farm: &NodeFarm, i: usize, command: &str) -> anyhow::Result<String> {
    let out = ssh(farm, i, command)?.output()?;
    anyhow::ensure!(out.status.success(), "ssh to {} `{command}`: {}", farm.nodes[i].name, String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What capssh's job records rely on after a reboot, seen from an SSH session: a new boot id
/// (each node its own, not this machine's), no process of the old boot, /run empty, the disk
/// kept, the same host key, and the network back.
fn a_reboot_is_a_reboot_as_capssh_sees_one(farm: &NodeFarm) -> anyhow::Result<()> {
    let machine_boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")?.trim().to_string();
    let boots: Vec<String> =
        (0..2).map(|i| ssh_ok(farm, i, "cat /proc/sys/kernel/random/boot_id").map(|b| b.trim().to_string())).collect::<Result<_, _>>()?;
    assert!(boots[0] != boots[1] && !boots.contains(&machine_boot), "each node has its own boot id: {boots:?}, this machine {machine_boot}");
    ssh_ok(farm, 0, "mkdir -p /var/lib/capssh && echo kept > /var/lib/capssh/disk-marker && echo gone > /run/run-marker")?;
    let sleeper = ssh_ok(farm, 0, "setsid sleep 1000 > /dev/null 2>&1 < /dev/null & echo $!")?.trim().to_string();
    let mut session = ssh(farm, 0, "echo connected; sleep 600")?.stdout(Stdio::piped()).spawn()?;
    let mut first_line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(session.stdout.as_mut().expect("piped")), &mut first_line)?;
    assert_eq!(first_line.trim(), "connected");

    let report = farm.reboot(0)?;
    eprintln!(
        "node-0 rebooted: down in {:.1}s, sshd back after {:.1}s, link re-plugged: {}",
        report.down.as_secs_f64(),
        report.took.as_secs_f64(),
        report.replugged
    );
    // The open session ends with the node (ssh exits 255 when the connection drops).
    let status = session.wait()?;
    assert!(!status.success(), "the SSH session outlived the reboot: {status}");
    let boot = ssh_ok(farm, 0, "cat /proc/sys/kernel/random/boot_id")?.trim().to_string();
    assert!(boot != boots[0] && boot != machine_boot && boot == report.boot_id, "a new boot id: {boot} (before {})", boots[0]);
    assert_eq!(ssh_ok(farm, 0, "cat /var/lib/capssh/disk-marker")?.trim(), "kept", "the disk survives");
    assert_eq!(ssh_ok(farm, 0, "ls -A /run | grep -c marker || true")?.trim(), "0", "/run is a fresh tmpfs");
    assert_eq!(ssh_ok(farm, 0, &format!("pgrep -x sleep | grep -cx {sleeper} || true"))?.trim(), "0", "no process of the old boot");
    assert_eq!(ssh_ok(farm, 0, "systemctl is-system-running")?.trim(), "running");
    let other = farm.nodes[1].address;
    ssh_ok(farm, 0, &format!("bash -c 'exec 3<>/dev/tcp/{other}/22'"))?;
    Ok(())
}
