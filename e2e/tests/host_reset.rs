//! `capssh reset run` (the controller's reset step) on real sshd hosts, against what a node leaves
//! behind: volumes still mounted under the kubelet's folder are unmounted, never deleted through.

use capssh_e2e::hosts::HostFarm;
use capssh_e2e::tools::capssh;
use std::process::{Command, Output};

fn reset(farm: &HostFarm, host: usize) -> Output {
    let h = &farm.hosts[host];
    Command::new(capssh())
        .args(["--log-format", "text", "reset", "run", "--address", &h.address.to_string(), "--user", "root"])
        .arg("--identity")
        .arg(&farm.client_key.ed25519.private_key_path)
        .args(["--host-key", &h.host_key_public])
        .output()
        .expect("running capssh")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn a_volume_still_mounted_under_the_kubelet_keeps_its_data() {
    let farm = HostFarm::start("reset-volumes", 1).unwrap();
    // A pod's volume, as a network volume looks from the node: someone else's data, mounted.
    farm.exec_ok(
        0,
        "mkdir -p /var/lib/capssh/volume-data /var/lib/kubelet/pods/p1/volumes/kubernetes.io~nfs/data \
         && echo precious > /var/lib/capssh/volume-data/file \
         && mount --bind /var/lib/capssh/volume-data /var/lib/kubelet/pods/p1/volumes/kubernetes.io~nfs/data \
         && echo conf > /var/lib/kubelet/config.yaml",
    )
    .unwrap();
    let out = reset(&farm, 0);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(farm.exec_ok(0, "cat /var/lib/capssh/volume-data/file").unwrap(), "precious\n", "the volume's data survives the reset");
    assert!(farm.exec_ok(0, "grep ' /var/lib/kubelet/' /proc/mounts; true").unwrap().is_empty(), "nothing stays mounted under the kubelet");
    assert!(farm.exec_ok(0, "ls -A /var/lib/kubelet").unwrap().is_empty(), "the kubelet's own files are gone");
}

#[test]
fn a_control_plane_vip_left_by_a_killed_kube_vip_goes_and_the_host_address_stays() {
    let farm = HostFarm::start("reset-vip", 1).unwrap();
    let own = farm.hosts[0].address.to_string();
    // kube-vip, killed with its Pod by the reset, never takes its /32 down. The address is from
    // the test range and lives in this host's network namespace only.
    let vip = "198.19.255.250";
    farm.exec_ok(
        0,
        &format!(
            "mkdir -p /etc/kubernetes && printf 'apiVersion: v1\\nclusters:\\n- cluster:\\n    server: https://{vip}:6443\\n  name: c\\n' \
             > /etc/kubernetes/admin.conf && dev=$(ip -o addr show | awk -v a={own} '{{split($4, p, \"/\"); if (p[1] == a) print $2}}') && ip addr add {vip}/32 dev \"$dev\""
        ),
    )
    .unwrap();
    let out = reset(&farm, 0);
    assert!(out.status.success(), "{}", text(&out));
    let addresses = farm.exec_ok(0, "ip -o addr show").unwrap();
    assert!(!addresses.contains(&format!(" {vip}/32 ")), "the VIP is gone after the reset:\n{addresses}\n{}", text(&out));
    assert!(addresses.contains(&format!(" {own}/")), "the host keeps its own address:\n{addresses}");
}
