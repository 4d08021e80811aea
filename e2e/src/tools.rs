//! Where the binaries the suites run are.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("e2e/ is inside the repository").to_path_buf()
}

/// An upstream tool built by hack/tools/build.sh.
pub fn tool(name: &str) -> PathBuf {
    let path = repo_root().join("hack/tools/bin").join(name);
    assert!(path.exists(), "{} is missing: run hack/tools/build.sh (the README's test command does)", path.display());
    path
}

/// Builds one tool of hack/tools/tools.txt by its name (hack/tools/build.sh NAME: cached, so a
/// tool already built at its version, or a module of this repository at its sources, is not
/// built again) and returns its path. Its progress goes to this process's stderr.
pub fn build_tool(name: &str) -> anyhow::Result<PathBuf> {
    let status = Command::new(repo_root().join("hack/tools/build.sh"))
        .arg(name)
        .stdout(std::process::Stdio::inherit())
        .stderr(std::process::Stdio::inherit())
        .status()
        .map_err(|err| anyhow::anyhow!("running hack/tools/build.sh {name}: {err}"))?;
    anyhow::ensure!(status.success(), "hack/tools/build.sh {name}: {status}");
    Ok(tool(name))
}

/// The capssh binary of this workspace, built by `cargo test` (or by `cargo build`).
pub fn capssh() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| repo_root().join("target"));
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    let path = target.join(profile).join("capssh");
    assert!(path.exists(), "{} is missing: run `cargo build` first", path.display());
    path
}

/// The source folder of a Go module pinned in hack/tools (for Cluster API's manifests).
pub fn module_dir(module: &str) -> PathBuf {
    let out = Command::new(repo_root().join("hack/tools/build.sh"))
        .args(["--module-dir", module])
        .output()
        .expect("running hack/tools/build.sh --module-dir");
    assert!(out.status.success(), "module dir of {module}: {}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// Where a suite keeps its logs and working files (kept after the run, for debugging).
pub fn artifacts_dir(suite: &str) -> PathBuf {
    let base = std::env::var_os("CAPSSH_ARTIFACTS").map(PathBuf::from).unwrap_or_else(|| repo_root().join("_artifacts"));
    let dir = base.join("e2e").join(format!("{suite}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creating the artifacts folder");
    dir
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for a test process).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("binding a free port").port()
}
