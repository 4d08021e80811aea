//! The peers. BYOH ([`super::byoh`]) is the one that runs: [`byoh_binaries`] finds its two
//! binaries, which hack/tools builds only when named ([`build_byoh`], `make bench`).
//!
//! The first choice was k0smotron's RemoteMachine controller (`--enable-controller=infrastructure`),
//! from the Go module github.com/k0sproject/k0smotron/v2. On this workplace it cannot be had: the
//! Go module proxy refuses the module and the other k0sproject modules it requires (403 "This
//! module version is not available"), and there is no other route to its source that a build
//! recipe here may use. [`availability`] asks the proxy again on every run and reports its exact
//! answer (and a run on a machine where the module resolves says so instead).

use serde::Serialize;
use std::path::PathBuf;
use std::process::Command;

/// What each peer can do on this run, found once per benchmark.
pub struct Peers {
    /// k0smotron: never runs here; says why.
    pub k0smotron: PeerStatus,
    /// BYOH's manager and agent, or why BYOH cannot run (not built, or the build's failure).
    pub byoh: Result<(PathBuf, PathBuf), String>,
}

impl Peers {
    /// With `build`, builds BYOH's binaries first (hack/tools/build.sh; its log goes to `build_log`).
    pub fn find(build: bool, build_log: &std::path::Path) -> Self {
        let byoh = if build { build_byoh(build_log).and_then(|()| byoh_binaries()) } else { byoh_binaries() };
        Self { k0smotron: availability(), byoh }
    }
}

/// BYOH's binaries in hack/tools (tools.txt names): the manager and the host agent.
pub const BYOH_TOOLS: [&str; 2] = ["byoh-manager", "byoh-agent"];

/// The BYOH manager's and agent's paths, or why they are not there.
pub fn byoh_binaries() -> Result<(PathBuf, PathBuf), String> {
    let [manager, agent] = BYOH_TOOLS.map(|name| crate::tools::repo_root().join("hack/tools/bin").join(name));
    match (manager.exists(), agent.exists()) {
        (true, true) => Ok((manager, agent)),
        _ => Err(format!(
            "not built: {} or {} is missing (`hack/tools/build.sh {}`; `make bench` builds them)",
            manager.display(),
            agent.display(),
            BYOH_TOOLS.join(" ")
        )),
    }
}

/// Builds BYOH's binaries (hack/tools/build.sh, cached by version); on failure, the build's
/// last lines. Its whole output goes to this process's stderr and to `log`.
pub fn build_byoh(log: &std::path::Path) -> Result<(), String> {
    let script = crate::tools::repo_root().join("hack/tools/build.sh");
    let out = Command::new("nice").args(["-n", "19"]).arg(&script).args(BYOH_TOOLS).output();
    let out = out.map_err(|err| format!("running {}: {err}", script.display()))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprint!("{text}");
    let _ = std::fs::write(log, &text);
    if out.status.success() {
        return Ok(());
    }
    let lines: Vec<&str> = text.lines().collect();
    Err(format!("hack/tools/build.sh {}: {}: {}", BYOH_TOOLS.join(" "), out.status, lines[lines.len().saturating_sub(20)..].join("\n")))
}

/// The module and the newest release we know of (its tags end at v2.1.0).
pub const MODULE: &str = "github.com/k0sproject/k0smotron/v2";
pub const VERSION: &str = "v2.1.0";
/// Modules the controller requires from the same owner, asked about too.
pub const REQUIRED: [&str; 3] = ["github.com/k0sproject/k0s", "github.com/k0sproject/rig", "github.com/k0sproject/version"];

#[derive(Clone, Debug, Default, Serialize)]
pub struct PeerStatus {
    pub ran: bool,
    /// Why it did not run: the Go toolchain's own words.
    pub reason: String,
}

/// Whether the peer can be built here; never builds anything.
pub fn availability() -> PeerStatus {
    let binary = crate::tools::repo_root().join("hack/tools/bin/k0smotron");
    if binary.exists() {
        return PeerStatus { ran: false, reason: format!("{} exists, but this benchmark has no runner for it yet", binary.display()) };
    }
    let mut reasons = Vec::new();
    let first = std::iter::once(format!("{MODULE}@{VERSION}"));
    for module in first.chain(REQUIRED.iter().map(|m| format!("{m}@latest"))) {
        // `go list -m` asks the proxy for the version's .info only: nothing is downloaded or built.
        let out = Command::new("go")
            .args(["list", "-m", &module])
            .env("GOTOOLCHAIN", "local")
            .env("GO111MODULE", "on")
            .current_dir(std::env::temp_dir())
            .output();
        let answer = match out {
            Err(err) => format!("{module}: cannot run go: {err}"),
            Ok(out) if out.status.success() => format!("{module}: resolvable"),
            Ok(out) => String::from_utf8_lossy(&out.stderr).lines().map(str::trim).collect::<Vec<_>>().join(" "),
        };
        reasons.push(answer);
    }
    let all_refused = reasons.iter().all(|r| !r.ends_with("resolvable"));
    let reason = if all_refused {
        format!("not built: the Go module proxy refuses k0smotron and the k0sproject modules it requires: {}", reasons.join("; "))
    } else {
        format!("not built yet (hack/tools has no k0smotron module): {}", reasons.join("; "))
    };
    PeerStatus { ran: false, reason }
}
