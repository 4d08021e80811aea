//! `make images`: every image `clusterctl init --infrastructure ssh` installs, as OCI archives in
//! `_artifacts/images/`: capssh's manager, Cluster API's core, kubeadm bootstrap and kubeadm
//! control-plane managers, and cert-manager's controller, webhook and cainjector; cached by
//! content (the same inputs give the same file, not written again; archives of older inputs are
//! removed).
//!
//!   images [--push REPOSITORY]
//!
//! With `--push host[:port]/path` (or `IMAGES_PUSH_TO`), every image is pushed by crane under that
//! repository by its name and tag (`registry.k8s.io/cluster-api/x:v1` → `REPOSITORY/x:v1`), where
//! clusterctl's `images: {all: {repository: REPOSITORY}}` sends every provider and cert-manager,
//! with the credentials of `$DOCKER_CONFIG/config.json` and, for a private CA, `SSL_CERT_FILE`. Needs a
//! release build of capssh and hack/tools' Cluster API managers, cert-manager and crane (`make
//! images` makes them).

use capssh_e2e::images::{ImageArchive, push};
use capssh_e2e::installed::{in_repository, install_images};
use capssh_e2e::tools::{capssh, repo_root};
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let mut push_to = std::env::var("IMAGES_PUSH_TO").ok().filter(|v| !v.trim().is_empty());
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--push" => push_to = Some(args.next().ok_or_else(|| anyhow::anyhow!("--push needs a repository (host[:port]/path)"))?),
            other => anyhow::bail!("unknown argument {other} (usage: images [--push REPOSITORY])"),
        }
    }
    let base = std::env::var_os("CAPSSH_ARTIFACTS").map(PathBuf::from).unwrap_or_else(|| repo_root().join("_artifacts"));
    let out = base.join("images");

    let archives: Vec<ImageArchive> = install_images(&capssh(), &out)?;
    for archive in &archives {
        println!("{}  {}  {}", archive.reference, archive.digest, archive.path.display());
    }
    for entry in std::fs::read_dir(&out)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "tar") && !archives.iter().any(|a| a.path == path) {
            std::fs::remove_file(&path)?;
        }
    }
    if let Some(registry) = push_to {
        for archive in &archives {
            let target = in_repository(&archive.reference, &registry);
            let digest = push(archive, &target, &[])?;
            anyhow::ensure!(digest == archive.digest, "{target}: the registry stored {digest}, the archive holds {}", archive.digest);
            println!("pushed {target}@{digest}");
        }
    }
    Ok(())
}
