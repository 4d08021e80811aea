//! The peer: k0smotron's RemoteMachine controller (`--enable-controller=infrastructure`), meant
//! to be built by hack/tools from the Go module github.com/k0sproject/k0smotron/v2.
//!
//! On this workplace it cannot be had: the Go module proxy refuses the module and the other
//! k0sproject modules it requires (403 "This module version is not available"), and there is no
//! other route to its source that a build recipe here may use. [`availability`] asks the proxy
//! again on every run and reports its exact answer, so the table says why the column is empty
//! (and a run on a machine where the module resolves says so instead).

use serde::Serialize;
use std::process::Command;

/// The module and the newest release we know of (its tags end at v2.1.0).
pub const MODULE: &str = "github.com/k0sproject/k0smotron/v2";
pub const VERSION: &str = "v2.1.0";
/// Modules the controller requires from the same owner, asked about too.
pub const REQUIRED: [&str; 3] = ["github.com/k0sproject/k0s", "github.com/k0sproject/rig", "github.com/k0sproject/version"];

#[derive(Clone, Debug, Serialize)]
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
