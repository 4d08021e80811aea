//! What a farm needs from the machine itself (users, sudoers, mountpoints), and removing what crashed farms left behind.

#[allow(unused_imports)]
use super::*;

/// Once per process, under a machine-wide lock: the users, sudoers, the password, the mountpoints.
/// Returns capssh-pw's password.
pub(super) fn prepare_machine() -> anyhow::Result<String> {
    static DONE: OnceLock<Result<String, String>> = OnceLock::new();
    DONE.get_or_init(|| prepare_machine_once().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!("preparing this machine for test hosts: {e}"))
}

pub(super) fn prepare_machine_once() -> anyhow::Result<String> {
    for tool in ["/usr/sbin/sshd", "/usr/bin/sudo", "/usr/bin/ssh-keygen", "/usr/bin/nsenter", "/usr/bin/unshare"] {
        if !Path::new(tool).exists() {
            bail!("{tool} is missing: run hack/install-deps.sh");
        }
    }
    create_dir(Path::new(LOCK_ROOT), 0o755)?;
    create_dir(&Path::new(LOCK_ROOT).join("blocks"), 0o755)?;
    create_dir(Path::new(STATE_ROOT), 0o755)?;
    create_dir(&Path::new(STATE_ROOT).join("farms"), 0o755)?;
    let _guard = lock_wait(&Path::new(LOCK_ROOT).join("machine.lock"))?;

    for dir in PRIVATE_DIRS {
        fs::create_dir_all(dir).with_context(|| format!("creating the mountpoint {dir}"))?;
    }

    let password_file = Path::new(STATE_ROOT).join(format!("{PASSWORD_SUDO_USER}.password"));
    let password = match fs::read_to_string(&password_file) {
        Ok(p) if !p.trim().is_empty() => p.trim().to_string(),
        _ => {
            let mut bytes = [0u8; 18];
            File::open("/dev/urandom")?.read_exact(&mut bytes)?;
            let p = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
            write_file(&password_file, &format!("{p}\n"), 0o600)?;
            p
        }
    };

    for user in [SUDO_USER, PASSWORD_SUDO_USER] {
        let known = Command::new("id").args(["-u", user]).stdout(Stdio::null()).stderr(Stdio::null()).status()?;
        if !known.success() {
            let out = Command::new("useradd").args(["--create-home", "--shell", "/bin/bash", "--comment", "capssh e2e test user", user]).output()?;
            // 9: the user exists (someone else made it meanwhile).
            if !out.status.success() && out.status.code() != Some(9) {
                bail!("useradd {user}: {}", String::from_utf8_lossy(&out.stderr).trim());
            }
        }
    }
    // sshd (UsePAM no) refuses accounts whose password field starts with "!" (useradd's default):
    // capssh-sudo gets "*" (no password, not locked), capssh-pw the farm's password.
    run(Command::new("usermod").args(["-p", "*", SUDO_USER]))?;
    let mut chpasswd = Command::new("chpasswd").stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn()?;
    chpasswd.stdin.take().expect("stdin").write_all(format!("{PASSWORD_SUDO_USER}:{password}\n").as_bytes())?;
    let out = chpasswd.wait_with_output()?;
    if !out.status.success() {
        bail!("chpasswd: {}", String::from_utf8_lossy(&out.stderr).trim());
    }

    let sudoers = format!(
        "# capssh e2e test users (made by e2e/src/hosts.rs)\n\
         {SUDO_USER} ALL=(ALL) NOPASSWD:ALL\n\
         {PASSWORD_SUDO_USER} ALL=(ALL) ALL\n"
    );
    if fs::read_to_string(SUDOERS).ok().as_deref() != Some(sudoers.as_str()) {
        // sudo skips files with a dot in their name, so the draft is never read half-written.
        let draft = Path::new("/etc/sudoers.d/.capssh-e2e.draft");
        write_file(draft, &sudoers, 0o440)?;
        run(Command::new("visudo").args(["-c", "-q", "-f"]).arg(draft))?;
        fs::rename(draft, SUDOERS)?;
    }
    Ok(password)
}

/// Removes what farms whose owner is gone left behind: namespaces, root-side veths, state folders.
pub(super) fn remove_leftovers() -> anyhow::Result<()> {
    let blocks_dir = Path::new(LOCK_ROOT).join("blocks");
    // A block whose lock is free has no owner (a live farm holds its blocks until its network is
    // deleted). The locks taken here are held until the purge is over, so nobody claims such a
    // block and builds on it meanwhile.
    let held: std::cell::RefCell<HashMap<u32, Option<File>>> = Default::default();
    purge(|block| {
        let mut held = held.borrow_mut();
        held.entry(block).or_insert_with(|| try_lock(&blocks_dir.join(format!("{block:05}"))).ok().flatten()).is_some()
    })?;
    drop(held);
    for folder in ["farms", "keys"] {
        let Ok(entries) = fs::read_dir(Path::new(STATE_ROOT).join(folder)) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let pid: Option<i32> = name.split('-').next().and_then(|p| p.parse().ok());
            if let Some(pid) = pid {
                // SAFETY: signal 0 only checks that the process exists.
                let gone = unsafe { libc::kill(pid, 0) } != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
                if gone {
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
        }
    }
    Ok(())
}

/// Kills the processes in, and deletes, every farm namespace and root-side veth whose block `stale`
/// says is abandoned.
pub(super) fn purge(mut stale: impl FnMut(u32) -> bool) -> anyhow::Result<()> {
    let mut netns = Vec::new();
    if let Ok(entries) = fs::read_dir("/run/netns") {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let block = name
                .strip_prefix(NETNS_PREFIX)
                .and_then(|rest| rest.rsplit_once('-'))
                .filter(|(pid, _)| pid.parse::<u32>().is_ok())
                .and_then(|(_, b)| b.parse::<u32>().ok());
            if block.is_some_and(&mut stale) {
                netns.push(name);
            }
        }
    }
    let mut veths = Vec::new();
    if let Ok(entries) = fs::read_dir("/sys/class/net") {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let block = name.strip_prefix(VETH_PREFIX).filter(|b| b.len() == 5).and_then(|b| b.parse::<u32>().ok());
            if block.is_some_and(&mut stale) {
                veths.push(name);
            }
        }
    }
    if netns.is_empty() && veths.is_empty() {
        return Ok(());
    }
    let some: Vec<&String> = netns.iter().chain(&veths).take(4).collect();
    eprintln!("host farm: removing leftovers of earlier runs: {} namespaces, {} veths ({some:?} ...)", netns.len(), veths.len());
    let paths: Vec<PathBuf> = netns.iter().map(|n| Path::new("/run/netns").join(n)).collect();
    kill_processes_in(&paths);
    delete_networks(&netns, &veths);
    Ok(())
}

/// Deletes network namespaces (with nothing running in them any more) and makes sure the root-side
/// veths are gone. A namespace nothing holds is destroyed by the kernel, its veth pair with it, in
/// batches: far faster than `ip link del` (~20 ms per veth), which is only the fallback for a
/// namespace that something else still holds (a copy of its mount in another mount namespace).
pub(super) fn delete_networks(netns: &[String], veths: &[String]) {
    let _guard = lock_wait(&Path::new(LOCK_ROOT).join("net.lock"));
    if !netns.is_empty() {
        let batch: String = netns.iter().map(|n| format!("netns del {n}\n")).collect();
        // Errors are expected for namespaces a failed start never made.
        let _ = ip_batch(&batch, true);
    }
    let left = |veth: &&String| Path::new("/sys/class/net").join(veth).exists();
    let deadline = Instant::now() + Duration::from_secs(5);
    while veths.iter().any(|v| left(&v)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let batch: String = veths.iter().filter(left).map(|v| format!("link del {v}\n")).collect();
    if !batch.is_empty() {
        eprintln!("host farm: deleting veths whose namespace is still held elsewhere:\n{batch}");
        let _ = ip_batch(&batch, true);
    }
}

/// SIGKILL to every process whose network namespace is one of `namespaces` (paths under /run/netns),
/// until none is left.
pub(super) fn kill_processes_in(namespaces: &[PathBuf]) {
    let targets: HashSet<String> = namespaces.iter().filter_map(|p| fs::metadata(p).ok()).map(|m| format!("net:[{}]", m.ino())).collect();
    if targets.is_empty() {
        return;
    }
    let me = std::process::id();
    for _ in 0..20 {
        let mut found = 0;
        for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
            if pid == me {
                continue;
            }
            let Ok(ns) = fs::read_link(entry.path().join("ns/net")) else { continue };
            if targets.contains(ns.to_string_lossy().as_ref()) {
                found += 1;
                // SAFETY: plain syscall; the process is in one of the farm's namespaces.
                unsafe {
                    libc::kill(pid as i32, libc::SIGKILL);
                }
            }
        }
        if found == 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
