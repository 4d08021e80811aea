//! What a process costs, read from /proc: CPU seconds (utime + stime of /proc/<pid>/stat) and
//! resident memory (VmRSS, and VmHWM — the peak since the process started — of /proc/<pid>/status).

use serde::Serialize;

/// One reading of a process's counters.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct ProcSample {
    /// User + system CPU seconds since the process started.
    pub cpu_seconds: f64,
    /// Resident memory now, MiB.
    pub rss_mib: f64,
    /// Peak resident memory since the process started (VmHWM), MiB.
    pub peak_rss_mib: f64,
    /// The anonymous part of `rss_mib` (RssAnon): what is private to this process. The rest is
    /// mostly the binary's text, shared by every process running the same binary, so summing
    /// RssAnon over many processes of one binary is closer to what they cost together.
    pub rss_anon_mib: f64,
}

/// Reads `pid`'s counters; None once the process is gone.
pub fn sample(pid: u32) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the state's index 0.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| field_kib(&status, key);
    Some(ProcSample {
        cpu_seconds: ticks / hz,
        rss_mib: kib("VmRSS:") / 1024.0,
        peak_rss_mib: kib("VmHWM:") / 1024.0,
        rss_anon_mib: kib("RssAnon:") / 1024.0,
    })
}

/// CPU seconds of `pid` and of its children it has reaped (utime + stime + cutime + cstime):
/// for an sshd listener, what its sessions cost on the host. 0 when it is gone.
pub fn cpu_with_children(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    let Some((_, rest)) = stat.rsplit_once(')') else { return 0.0 };
    let fields: Vec<f64> = rest.split_whitespace().skip(11).take(4).filter_map(|f| f.parse().ok()).collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    fields.iter().sum::<f64>() / hz
}

/// Every process in the network namespaces of the first `n` hosts of `farm` (sshd, its
/// sessions, the anchor holding the host's namespaces, whatever a session started).
pub fn pids_in_hosts(farm: &crate::hosts::HostFarm, n: usize) -> Vec<u32> {
    use std::os::unix::fs::MetadataExt;
    let inodes: std::collections::HashSet<u64> = farm
        .hosts
        .iter()
        .take(n)
        .filter_map(|h| std::fs::metadata(std::path::Path::new("/run/netns").join(&h.netns)).ok().map(|m| m.ino()))
        .collect();
    let Ok(procs) = std::fs::read_dir("/proc") else { return Vec::new() };
    procs
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/ns/net"))
                .ok()
                .and_then(|l| l.to_str()?.strip_prefix("net:[")?.strip_suffix(']')?.parse::<u64>().ok())
                .is_some_and(|ino| inodes.contains(&ino))
        })
        .collect()
}

/// Host-side CPU of the first `n` hosts of `farm`: every process in their network namespaces
/// (sshd, its live sessions, and what they reaped: the commands SSH ran).
pub fn hosts_sshd_cpu(farm: &crate::hosts::HostFarm, n: usize) -> f64 {
    pids_in_hosts(farm, n).into_iter().map(cpu_with_children).sum()
}

/// The memory of every process on the first `n` hosts at one moment, summed.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct HostsMemory {
    pub processes: usize,
    pub rss_mib_total: f64,
    /// Proportional set size (smaps_rollup's Pss): shared pages split among the processes that
    /// map them, so summing it does not count sshd's text once per host.
    pub pss_mib_total: f64,
}

pub fn hosts_memory(farm: &crate::hosts::HostFarm, n: usize) -> HostsMemory {
    let mut total = HostsMemory::default();
    for pid in pids_in_hosts(farm, n) {
        let Ok(rollup) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else { continue };
        total.processes += 1;
        total.rss_mib_total += field_kib(&rollup, "Rss:") / 1024.0;
        total.pss_mib_total += field_kib(&rollup, "Pss:") / 1024.0;
    }
    total
}

/// The number of a `Key:   123 kB` line of /proc status-like text, in KiB (0 when absent).
pub fn field_kib(text: &str, key: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.split_whitespace().next()).and_then(|v| v.parse().ok()).unwrap_or(0.0)
}

/// Resident memory of `pid` now, MiB (0 when it is gone).
pub fn rss_mib(pid: u32) -> f64 {
    sample(pid).map(|s| s.rss_mib).unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_process() {
        let s = super::sample(std::process::id()).unwrap();
        assert!(s.rss_mib > 0.0 && s.peak_rss_mib >= s.rss_mib && s.cpu_seconds >= 0.0, "{s:?}");
        assert!(s.rss_anon_mib > 0.0 && s.rss_anon_mib <= s.rss_mib, "{s:?}");
    }

    #[test]
    fn fields_of_smaps_rollup() {
        // `Pss:` must not match `Pss_Anon:` and the like: keys end at the colon.
        let text = "55d0c0a00000-7ffd1b9f5000 ---p 00000000 00:00 0  [rollup]\nRss:                5120 kB\nPss:                1234 kB\n\
                    Pss_Anon:            400 kB\nPss_File:            834 kB\n";
        assert_eq!(super::field_kib(text, "Rss:"), 5120.0);
        assert_eq!(super::field_kib(text, "Pss:"), 1234.0);
        assert_eq!(super::field_kib(text, "Swap:"), 0.0);
    }
}
