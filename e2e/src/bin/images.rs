//! `make images`: capssh's manager image and Cluster API's core, kubeadm bootstrap and kubeadm
//! control-plane manager images as OCI archives in `_artifacts/images/`, cached by content (the
//! same inputs give the same file, not written again; archives of older inputs are removed).
//!
//!   images [--push REGISTRY]
//!
//! With `--push host[:port]` (or `IMAGES_PUSH_TO`), every image is pushed there by crane under its
//! own path (`registry.k8s.io/cluster-api/x:v1` → `REGISTRY/cluster-api/x:v1`), with the
//! credentials of `$DOCKER_CONFIG/config.json` and, for a private CA, `SSL_CERT_FILE`. Needs a
//! release build of capssh and hack/tools' Cluster API managers and crane (`make images` makes them).

use capssh_e2e::images::{CAPI_MANAGER_IMAGES, ImageArchive, ImageSpec, build_image, capi_manager_image, capssh_image, push, relocate};
use capssh_e2e::tools::{capssh, repo_root};
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let mut push_to = std::env::var("IMAGES_PUSH_TO").ok().filter(|v| !v.trim().is_empty());
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--push" => push_to = Some(args.next().ok_or_else(|| anyhow::anyhow!("--push needs a registry"))?),
            other => anyhow::bail!("unknown argument {other} (usage: images [--push REGISTRY])"),
        }
    }
    let base = std::env::var_os("CAPSSH_ARTIFACTS").map(PathBuf::from).unwrap_or_else(|| repo_root().join("_artifacts"));
    let out = base.join("images");

    // One image in memory at a time: the managers are about 100 MB each.
    let mut specs: Vec<Box<dyn Fn() -> anyhow::Result<ImageSpec>>> = vec![Box::new(|| capssh_image(&capssh()))];
    for (tool, image) in CAPI_MANAGER_IMAGES {
        specs.push(Box::new(move || capi_manager_image(tool, image)));
    }
    let mut archives: Vec<ImageArchive> = Vec::new();
    for spec in specs {
        let archive = build_image(&spec()?, &out)?;
        println!("{}  {}  {}", archive.reference, archive.digest, archive.path.display());
        archives.push(archive);
    }
    for entry in std::fs::read_dir(&out)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "tar") && !archives.iter().any(|a| a.path == path) {
            std::fs::remove_file(&path)?;
        }
    }
    if let Some(registry) = push_to {
        for archive in &archives {
            let target = relocate(&archive.reference, &registry);
            let digest = push(archive, &target, &[])?;
            anyhow::ensure!(digest == archive.digest, "{target}: the registry stored {digest}, the archive holds {}", archive.digest);
            println!("pushed {target}@{digest}");
        }
    }
    Ok(())
}
