//! The SSH test-host harness itself, against the real OpenSSH client: hosts accept the farm's keys
//! for its users and nothing else, keep their state directories to themselves, can be unplugged,
//! crashed and re-keyed, and leave nothing behind. Needs root (network namespaces).

use capssh_e2e::hosts::{ClientKey, HostFarm, PASSWORD_SUDO_USER, PRIVATE_DIRS, SUDO_USER};
use std::collections::HashSet;
use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const SUITE: &str = "host-farm";

fn ssh(farm: &HostFarm, host: usize, user: &str, key: &ClientKey, remote: &str) -> Output {
    farm.ssh_command(host, user, key).arg(remote).output().expect("running ssh")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// stdout of a command that must succeed.
fn ssh_ok(farm: &HostFarm, host: usize, user: &str, key: &ClientKey, remote: &str) -> String {
    let out = ssh(farm, host, user, key, remote);
    assert!(out.status.success(), "`{remote}` as {user} on {} with {}: {}\n{}", farm.hosts[host].name, key.algorithm, out.status, text(&out.stderr));
    text(&out.stdout)
}

fn in_test_range(address: Ipv4Addr) -> bool {
    let [a, b, ..] = address.octets();
    a == 198 && (b == 18 || b == 19)
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(out.status.success(), "ip {args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

/// PIDs of the processes in the network namespace /run/netns/`netns`.
fn pids_in_netns(netns: &str) -> Vec<u32> {
    let inode = fs::metadata(Path::new("/run/netns").join(netns)).expect("namespace exists").ino();
    let wanted = format!("net:[{inode}]");
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let ns = fs::read_link(e.path().join("ns/net")).ok()?;
            (ns.to_string_lossy() == wanted).then_some(pid)
        })
        .collect()
}

#[test]
fn hosts_accept_the_farm_keys_for_each_user_and_nothing_else() {
    let farm = HostFarm::start(SUITE, 3).expect("starting 3 hosts");
    assert_eq!(farm.hosts.len(), 3);
    let addresses: HashSet<Ipv4Addr> = farm.hosts.iter().map(|h| h.address).collect();
    assert_eq!(addresses.len(), 3, "every host has its own address");
    let known_hosts = fs::read_to_string(&farm.known_hosts).unwrap();
    for (i, h) in farm.hosts.iter().enumerate() {
        assert_eq!(h.name, format!("h{i}"));
        assert!(in_test_range(h.address) && in_test_range(h.gateway), "{} is in 198.18.0.0/15", h.address);
        assert_eq!(h.port, 22);
        assert!(h.veth.len() <= 15, "{} fits an interface name", h.veth);
        assert!(h.host_key_public.starts_with("ssh-ed25519 AAAA"), "{}", h.host_key_public);
        assert!(known_hosts.contains(&h.known_hosts_line()));
        // Our fingerprint is what ssh-keygen says.
        let pub_file = farm.dir.join(format!("{}-key.pub", h.name));
        fs::write(&pub_file, format!("{}\n", h.host_key_public)).unwrap();
        let printed = Command::new("ssh-keygen").arg("-lf").arg(&pub_file).output().unwrap();
        assert!(
            text(&printed.stdout).split_whitespace().nth(1) == Some(h.host_key_fingerprint.as_str()),
            "ssh-keygen -lf printed {:?}, we said {}",
            text(&printed.stdout),
            h.host_key_fingerprint
        );
    }
    let keys = &farm.client_key;
    assert_eq!([&keys.ed25519, &keys.rsa, &keys.ecdsa].map(|k| k.algorithm.as_str()), ["ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256"]);
    for key in [&keys.ed25519, &keys.rsa, &keys.ecdsa, &keys.unauthorized] {
        assert!(key.private_key_pem.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
        assert!(key.fingerprint.starts_with("SHA256:"));
        assert_eq!(fs::metadata(&key.private_key_path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    for i in 0..farm.hosts.len() {
        let name = &farm.hosts[i].name;
        for key in keys.authorized() {
            assert_eq!(ssh_ok(&farm, i, "root", key, "id -un; hostname"), format!("root\n{name}\n"));
        }
        // The passwordless sudo user.
        for key in keys.authorized() {
            let out = ssh_ok(&farm, i, SUDO_USER, key, "id -un; sudo -n id -u");
            assert_eq!(out, format!("{SUDO_USER}\n0\n"));
        }
        // The sudo-with-a-password user logs in with keys too, but `sudo -n` refuses.
        assert_eq!(ssh_ok(&farm, i, PASSWORD_SUDO_USER, &keys.ed25519, "id -un"), format!("{PASSWORD_SUDO_USER}\n"));
        let out = ssh(&farm, i, PASSWORD_SUDO_USER, &keys.ed25519, "sudo -n true");
        assert!(!out.status.success());
        assert!(text(&out.stderr).contains("a password is required"), "stderr: {}", text(&out.stderr));
        // A key nobody authorized.
        for user in ["root", SUDO_USER, PASSWORD_SUDO_USER] {
            let out = ssh(&farm, i, user, &keys.unauthorized, "true");
            assert_eq!(out.status.code(), Some(255), "{user} with the unauthorized key");
            assert!(text(&out.stderr).contains("Permission denied"), "stderr: {}", text(&out.stderr));
        }
        // The SFTP subsystem answers.
        let sftp = Command::new("sftp")
            .args(["-F", "/dev/null", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", farm.known_hosts.display()))
            .arg("-i")
            .arg(&keys.ed25519.private_key_path)
            .args(["-b", "-"])
            .arg(format!("root@{}", farm.hosts[i].address))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        sftp.stdin.as_ref().unwrap().write_all(b"cd /run\npwd\n").unwrap();
        let out = sftp.wait_with_output().unwrap();
        assert!(out.status.success(), "sftp: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains("/run"), "sftp said {}", text(&out.stdout));
    }

    // A host key that does not match the pin is refused (StrictHostKeyChecking=yes).
    let wrong = farm.dir.join("wrong_known_hosts");
    let lines: String = farm.hosts.iter().map(|h| format!("{} {}\n", h.address, farm.hosts[0].host_key_public)).collect();
    fs::write(&wrong, lines).unwrap();
    let option = format!("UserKnownHostsFile={}", wrong.display());
    let out = farm.ssh_command_with(1, "root", &keys.ed25519, &["-o", &option]).arg("true").output().unwrap();
    assert_eq!(out.status.code(), Some(255));
    assert!(text(&out.stderr).contains("Host key verification failed"), "stderr: {}", text(&out.stderr));
}

#[test]
fn each_host_has_private_state_directories_and_its_own_network() {
    let farm = HostFarm::start(SUITE, 3).expect("starting 3 hosts");
    let probe = "capssh-isolation-probe";
    for dir in PRIVATE_DIRS {
        farm.exec_ok(0, &format!("echo h0 > {dir}/{probe}")).unwrap();
        assert!(!Path::new(dir).join(probe).exists(), "{dir}/{probe} of h0 is invisible on this machine");
        let out = farm.exec(1, &format!("test -e {dir}/{probe}")).unwrap();
        assert_eq!(out.status.code(), Some(1), "{dir}/{probe} of h0 is invisible on h1");
        assert_eq!(farm.exec_ok(0, &format!("cat {dir}/{probe}")).unwrap(), "h0\n");
    }
    // Over SSH, the host shows the same private view; other hosts do not see it.
    let key = &farm.client_key.ed25519;
    assert_eq!(ssh_ok(&farm, 0, "root", key, &format!("cat /run/{probe}")), "h0\n");
    assert_eq!(ssh_ok(&farm, 0, SUDO_USER, key, &format!("sudo -n cat /var/lib/capssh/{probe}")), "h0\n");
    let out = ssh(&farm, 2, "root", key, &format!("cat /run/{probe}"));
    assert!(!out.status.success(), "h2 must not see h0's /run");
    // A file that a sudo session writes stays on that host.
    ssh_ok(&farm, 2, SUDO_USER, key, "sudo -n mkdir -p /run/cluster-api && sudo -n touch /run/cluster-api/bootstrap-success.complete");
    assert!(farm.exec(2, "test -e /run/cluster-api/bootstrap-success.complete").unwrap().status.success());
    assert!(!farm.exec(1, "test -e /run/cluster-api").unwrap().status.success());
    assert!(!Path::new("/run/cluster-api").exists());

    for (i, h) in farm.hosts.iter().enumerate() {
        assert_eq!(farm.exec_ok(i, "hostname").unwrap().trim(), h.name);
        assert_eq!(farm.exec_ok(i, "cat /etc/hostname").unwrap().trim(), h.name);
        assert!(farm.exec_ok(i, "getent hosts $(hostname)").unwrap().starts_with(&h.address.to_string()));
        // Inside: only lo and eth0, with the host's address; no default route; other hosts'
        // namespaces are not visible.
        let links = farm.exec_ok(i, "ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1").unwrap();
        assert_eq!(links.split_whitespace().collect::<Vec<_>>(), ["lo", "eth0"]);
        assert!(farm.exec_ok(i, "ip -4 -o addr show dev eth0").unwrap().contains(&format!("{}/30", h.address)));
        assert_eq!(farm.exec_ok(i, "ip route show default").unwrap().trim(), "");
        assert_eq!(farm.exec_ok(i, "ip -6 addr show dev eth0").unwrap().trim(), "", "no IPv6 on {}", h.name);
        assert_eq!(ip(&["-6", "addr", "show", "dev", &h.veth]).trim(), "", "no IPv6 on {}", h.veth);
        assert_eq!(farm.exec_ok(i, "ls /run/netns 2>/dev/null | wc -l").unwrap().trim(), "0");
        assert!(farm.exec_ok(i, "test -d /run/sshd && stat -c %a /tmp").unwrap().trim() == "1777");
    }
    // Hosts are apart: h0 has no route to h1.
    let out = farm.exec(0, &format!("timeout 3 bash -c 'exec 3<>/dev/tcp/{}/22'", farm.hosts[1].address)).unwrap();
    assert!(!out.status.success(), "h0 must not reach h1");
}

#[test]
fn links_sshd_crashes_and_host_keys_are_under_the_tests_control() {
    let mut farm = HostFarm::start(SUITE, 2).expect("starting 2 hosts");
    let key = farm.client_key.ed25519.clone();
    let quick = |farm: &HostFarm, host: usize| farm.ssh_command_with(host, "root", &key, &["-o", "ConnectTimeout=2"]).arg("true").output().unwrap();

    // Unplugged: connections time out; the other host is unaffected; plugged back: it answers.
    farm.set_link(0, false).unwrap();
    let started = Instant::now();
    let out = quick(&farm, 0);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("timed out"), "stderr: {}", text(&out.stderr));
    assert!(started.elapsed() >= Duration::from_secs(2));
    // Still silence later (no ARP failure turning it into "No route to host").
    std::thread::sleep(Duration::from_secs(2));
    let out = quick(&farm, 0);
    assert!(text(&out.stderr).contains("timed out"), "stderr: {}", text(&out.stderr));
    assert!(quick(&farm, 1).status.success());
    farm.set_link(0, true).unwrap();
    let out = quick(&farm, 0);
    assert!(out.status.success(), "h0 answers again: {}", text(&out.stderr));

    // A crashed sshd refuses connections; the host keeps its files; a restart brings it back.
    farm.exec_ok(0, "echo kept > /var/lib/capssh/state").unwrap();
    let old_pid = farm.hosts[0].sshd_pid().expect("sshd runs");
    farm.kill_sshd(0).unwrap();
    assert_eq!(farm.hosts[0].sshd_pid(), None);
    assert!(!Path::new(&format!("/proc/{old_pid}")).exists(), "sshd {old_pid} is gone");
    let out = quick(&farm, 0);
    assert!(text(&out.stderr).contains("Connection refused"), "stderr: {}", text(&out.stderr));
    farm.start_sshd(0).unwrap();
    assert_eq!(ssh_ok(&farm, 0, "root", &key, "cat /var/lib/capssh/state"), "kept\n");
    farm.restart_sshd(0).unwrap();
    assert!(quick(&farm, 0).status.success());

    // A new host key: the old pin is refused, the farm's known_hosts has the new one.
    let old_known_hosts = fs::read_to_string(&farm.known_hosts).unwrap();
    let old_fingerprint = farm.hosts[0].host_key_fingerprint.clone();
    farm.replace_host_key(0).unwrap();
    assert_ne!(farm.hosts[0].host_key_fingerprint, old_fingerprint);
    assert!(quick(&farm, 0).status.success(), "the new key is in known_hosts");
    let old = farm.dir.join("old_known_hosts");
    fs::write(&old, old_known_hosts).unwrap();
    let option = format!("UserKnownHostsFile={}", old.display());
    let out = farm.ssh_command_with(0, "root", &key, &["-o", &option, "-o", "LogLevel=INFO"]).arg("true").output().unwrap();
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("REMOTE HOST IDENTIFICATION HAS CHANGED") && stderr.contains("Host key verification failed"), "{stderr}");
    assert_eq!(ssh_ok(&farm, 0, "root", &key, "cat /var/lib/capssh/state"), "kept\n");
}

#[test]
fn the_password_user_logs_in_and_sudoes_with_its_password() {
    let farm = HostFarm::start(SUITE, 1).expect("starting 1 host");
    let password_ssh = |user: &str, password: &str, remote: &str| {
        let askpass = farm.dir.join(format!("askpass-{user}-{}", password.len()));
        fs::write(&askpass, format!("#!/bin/sh\necho '{password}'\n")).unwrap();
        fs::set_permissions(&askpass, fs::Permissions::from_mode(0o700)).unwrap();
        Command::new("ssh")
            .args(["-F", "/dev/null", "-o", "StrictHostKeyChecking=yes", "-o", "PubkeyAuthentication=no"])
            .args(["-o", "PreferredAuthentications=password", "-o", "NumberOfPasswordPrompts=1"])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", farm.known_hosts.display()))
            .arg(format!("{user}@{}", farm.hosts[0].address))
            .arg(remote)
            .env("SSH_ASKPASS", &askpass)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("DISPLAY", ":0")
            .env_remove("SSH_AUTH_SOCK")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let password = farm.sudo_password.clone();
    let out = password_ssh(PASSWORD_SUDO_USER, &password, &format!("echo '{password}' | sudo -S -p '' id -u"));
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "0\n");
    let out = password_ssh(PASSWORD_SUDO_USER, "wrong-password", "true");
    assert_eq!(out.status.code(), Some(255), "a wrong password is refused");
    // Passwords are for that user only.
    let out = password_ssh(SUDO_USER, &password, "true");
    assert_eq!(out.status.code(), Some(255));
    let out = password_ssh("root", &password, "true");
    assert_eq!(out.status.code(), Some(255));
}

#[test]
fn dropping_the_farm_leaves_nothing_behind() {
    let farm = HostFarm::start(SUITE, 2).expect("starting 2 hosts");
    // Things that live on after their starter: a background process from exec, an open SSH
    // session, and a process that a session left running detached.
    farm.exec_ok(0, "setsid sleep 600 >/dev/null 2>&1 < /dev/null &").unwrap();
    let mut session = farm
        .ssh_command(1, "root", &farm.client_key.ed25519)
        .arg("nohup setsid sleep 601 >/dev/null 2>&1 < /dev/null & sleep 602")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids_in_netns(&farm.hosts[1].netns).len() < 5 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let names: Vec<(String, String)> = farm.hosts.iter().map(|h| (h.netns.clone(), h.veth.clone())).collect();
    let mut pids = Vec::new();
    for h in &farm.hosts {
        let inside = pids_in_netns(&h.netns);
        assert!(inside.contains(&h.sshd_pid().unwrap()) && inside.contains(&h.anchor_pid()));
        pids.extend(inside.into_iter().map(|pid| (pid, h.netns.clone())));
    }
    assert!(pids.len() >= 2 * 2 + 1 + 3, "anchors, sshds and the sleeps: {pids:?}");
    let dir = farm.dir.clone();
    let inodes: Vec<String> =
        names.iter().map(|(ns, _)| format!("net:[{}]", fs::metadata(Path::new("/run/netns").join(ns)).unwrap().ino())).collect();

    drop(farm);

    let netns = ip(&["netns", "list"]);
    let links = ip(&["-o", "link", "show"]);
    for (ns, veth) in &names {
        assert!(!netns.contains(ns.as_str()), "namespace {ns} is gone");
        assert!(!links.contains(&format!(" {veth}@")) && !links.contains(&format!(" {veth}:")), "veth {veth} is gone");
        assert!(!Path::new("/run/netns").join(ns).exists());
    }
    for (pid, ns) in &pids {
        let proc_dir = format!("/proc/{pid}");
        let still_there = fs::read_link(format!("{proc_dir}/ns/net")).map(|l| inodes.contains(&l.to_string_lossy().into_owned())).unwrap_or(false);
        assert!(!still_there, "process {pid} of {ns} is gone");
    }
    assert!(!dir.exists(), "the farm's state folder is removed");
    // The SSH client saw its connection go.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if session.try_wait().unwrap().is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "the ssh client is still connected");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn leftovers_of_a_crashed_run_are_removed_at_start() {
    // A namespace and veth pair as a farm of a dead process would leave them, with a process inside.
    let mut dead = Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    let block = (20000..32000).find(|b| !Path::new(&format!("/run/capssh-e2e/blocks/{b:05}")).exists()).expect("a block never used");
    let netns = format!("capssh-{dead_pid}-{block:05}");
    let veth = format!("capssh{block:05}");
    ip(&["netns", "add", &netns]);
    ip(&["link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &netns]);
    let mut orphan = Command::new("ip").args(["netns", "exec", &netns, "sleep", "600"]).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids_in_netns(&netns).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }

    let farm = HostFarm::start(SUITE, 1).expect("starting 1 host");

    assert!(!ip(&["netns", "list"]).contains(&netns), "the stale namespace is gone");
    assert!(!Path::new("/sys/class/net").join(&veth).exists(), "the stale veth is gone");
    let status = orphan.wait().unwrap();
    assert!(!status.success(), "the process in the stale namespace was killed");
    drop(farm);
}

#[test]
fn fifty_hosts_start_and_stop() {
    let started = Instant::now();
    let farm = HostFarm::start(SUITE, 50).expect("starting 50 hosts");
    let start_time = started.elapsed();
    let addresses: HashSet<Ipv4Addr> = farm.hosts.iter().map(|h| h.address).collect();
    assert_eq!(addresses.len(), 50);
    for i in [0, 24, 49] {
        assert_eq!(ssh_ok(&farm, i, "root", &farm.client_key.ed25519, "hostname"), format!("h{i}\n"));
    }
    let stopping = Instant::now();
    drop(farm);
    eprintln!("TIMING: 50 hosts started in {:.2}s, removed in {:.2}s", start_time.as_secs_f64(), stopping.elapsed().as_secs_f64());
}
