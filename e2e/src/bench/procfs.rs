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
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Some(ProcSample { cpu_seconds: ticks / hz, rss_mib: kib("VmRSS:") / 1024.0, peak_rss_mib: kib("VmHWM:") / 1024.0 })
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
    }
}
