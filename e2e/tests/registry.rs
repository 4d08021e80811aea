//! The registry an air-gapped site runs (TLS, htpasswd auth), with capssh's image pushed to it as
//! `make images --push` pushes, then read back as a user and as an unknown client would.

use capssh_e2e::images::{archive_manifest_digest, build_image, capssh_image, push, relocate};
use capssh_e2e::registry::Registry;
use capssh_e2e::tools::{artifacts_dir, capssh, tool};
use sha2::{Digest, Sha256};
use std::process::Command;

#[test]
fn the_registry_serves_the_capssh_image_over_tls_to_its_users_only() -> anyhow::Result<()> {
    let dir = artifacts_dir("registry");
    let archive = build_image(&capssh_image(&capssh())?, &dir.join("images"))?;
    let archived = archive_manifest_digest(&archive.path)?;
    let registry = Registry::start(&dir.join("registry"))?;

    let target = relocate(&archive.reference, &registry.address);
    let pushed = push(&archive, &target, &registry.crane_env())?;
    assert_eq!(pushed, archived, "the registry stores the archive's manifest");

    let (repository, tag) = target.strip_prefix(&format!("{}/", registry.address)).and_then(|path| path.rsplit_once(':')).expect("host/path:tag");
    let manifest_path = format!("/v2/{repository}/manifests/{tag}");
    let answer = registry.get(&manifest_path, Some((&registry.user, registry.password())))?;
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    assert_eq!(answer.header("docker-content-digest"), Some(archived.as_str()));
    let body_digest: String = Sha256::digest(&answer.body).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(format!("sha256:{body_digest}"), archived);

    let wrong = format!("{}-not", registry.password());
    assert_eq!(registry.get(&manifest_path, Some((&registry.user, &wrong)))?.status, 401, "a wrong password is refused");
    assert_eq!(registry.get(&manifest_path, Some(("someone-else", registry.password())))?.status, 401, "an unknown user is refused");
    assert_eq!(registry.get(&manifest_path, None)?.status, 401, "anonymous reads are refused");

    // crane, with the credentials of the docker config file, sees the same image...
    let digest = Command::new(tool("crane")).arg("digest").arg(&target).envs(registry.crane_env()).output()?;
    assert!(digest.status.success(), "crane digest: {}", String::from_utf8_lossy(&digest.stderr));
    assert_eq!(String::from_utf8_lossy(&digest.stdout).trim(), archived);

    // ...and its file system runs capssh as the image's user, with only the files the image holds.
    let filesystem = dir.join("filesystem.tar");
    let export = Command::new(tool("crane")).arg("export").arg(&target).arg(&filesystem).envs(registry.crane_env()).output()?;
    assert!(export.status.success(), "crane export: {}", String::from_utf8_lossy(&export.stderr));
    let root = dir.join("root");
    std::fs::create_dir_all(&root)?;
    assert!(Command::new("tar").arg("-xpf").arg(&filesystem).arg("-C").arg(&root).status()?.success());
    let version = Command::new("chroot").arg("--userspec=65532:65532").arg(&root).args(["/capssh", "--version"]).output()?;
    assert!(version.status.success(), "/capssh in the image: {}", String::from_utf8_lossy(&version.stderr));
    assert_eq!(String::from_utf8_lossy(&version.stdout).trim(), format!("capssh {}", capssh::VERSION));
    // The logs stay for debugging; the three copies of a 300 MB image do not.
    drop(registry);
    for bulky in [root, filesystem, dir.join("images"), dir.join("registry/storage")] {
        let _ = std::fs::remove_dir_all(&bulky).or_else(|_| std::fs::remove_file(&bulky));
    }
    Ok(())
}
