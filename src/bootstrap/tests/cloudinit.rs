//! cloud-config: parsing, rendering, decoding, refusals.

use super::*;
use crate::bootstrap::script::WriteMode;
use crate::bootstrap::users::Flavor;
use std::io::Write as _;

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn init_renders_templates_and_keeps_cabpk_shapes() {
    let plan = cloud_plan(INIT).unwrap();
    let kubeadm = String::from_utf8(file(&plan, "/run/kubeadm/kubeadm.yaml").content.clone()).unwrap();
    assert!(kubeadm.starts_with("---\napiServer:\n"), "{kubeadm}");
    assert!(kubeadm.contains("    value: 'ssh://default/host-1'\n"), "{kubeadm}");
    assert!(kubeadm.contains("  name: 'node-1'\n"), "{kubeadm}");
    assert!(kubeadm.ends_with("  taints: null\n"), "{kubeadm:?}");
    let key = file(&plan, "/etc/kubernetes/pki/ca.key");
    assert_eq!(key.mode, Some(0o600));
    assert_eq!((key.user.as_deref(), key.group.as_deref()), (Some("root"), Some("root")));
    assert!(String::from_utf8_lossy(&key.content).starts_with("-----BEGIN EC PRIVATE KEY-----\n"));
    assert!(key.content.ends_with(b"-----END EC PRIVATE KEY-----\n"));
    let placeholder = file(&plan, "/run/cluster-api/placeholder");
    assert_eq!(placeholder.mode, Some(0o640));
    assert!(placeholder.content.starts_with(b"This placeholder file"));
    assert!(!placeholder.content.ends_with(b"\n"));
    assert_eq!(
        runcmd(&plan),
        [
            "swapoff -a",
            "sed -i '/ swap / s/^/#/' /etc/fstab",
            "echo \"198.18.0.21 node-1.example\" >> /etc/hosts",
            "kubeadm init --config /run/kubeadm/kubeadm.yaml  && echo success > /run/cluster-api/bootstrap-success.complete",
            "echo done > /run/capssh-post",
        ]
    );
    assert_eq!(plan.files().count(), 12);
}

#[test]
fn join_has_cloud_init_module_order_and_exact_bytes() {
    let plan = cloud_plan(JOIN).unwrap();
    assert_eq!(
        step_names(&plan),
        [
            "bootcmd",
            "file /etc/containerd/config.d/capssh.toml",
            "file /etc/modules-load.d/k8s.conf",
            "file /etc/capssh/motd",
            "file /run/kubeadm/kubeadm-join-config.yaml",
            "file /run/cluster-api/placeholder",
            "user capi",
        ]
    );
    match &plan.steps[0] {
        Step::Commands { items, env, .. } => {
            assert_eq!(items, &["mkdir -p /var/lib/capssh-boot", "echo booted > /var/lib/capssh-boot/stamp"]);
            assert_eq!(env, &[("INSTANCE_ID".to_string(), "default-host-1".to_string())]);
        }
        _ => panic!("bootcmd first"),
    }
    let toml = file(&plan, "/etc/containerd/config.d/capssh.toml");
    assert_eq!(toml.content, b"version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"registry.k8s.io/pause:3.10\"\n");
    assert_eq!((toml.mode, toml.how), (Some(0o644), WriteMode::Replace));
    let modules = file(&plan, "/etc/modules-load.d/k8s.conf");
    assert_eq!(modules.content, b"overlay\nbr_netfilter\n");
    assert_eq!(modules.how, WriteMode::Append);
    assert_eq!((modules.mode, modules.user.as_deref(), modules.group.as_deref()), (Some(0o644), Some("root"), Some("root")));
    let motd = file(&plan, "/etc/capssh/motd");
    assert_eq!(motd.content, b"managed by capssh\n");
    assert_eq!((motd.mode, motd.user.as_deref(), motd.group.as_deref()), (Some(0o600), Some("nobody"), Some("nogroup")));
    let kubeadm = String::from_utf8(file(&plan, "/run/kubeadm/kubeadm-join-config.yaml").content.clone()).unwrap();
    assert!(kubeadm.contains("    value: 'ssh://default/host-1'\n  name: 'node-1'\n"), "{kubeadm}");
    assert_eq!(
        runcmd(&plan)[3],
        "kubeadm join --config /run/kubeadm/kubeadm-join-config.yaml --v 5 && echo success > /run/cluster-api/bootstrap-success.complete"
    );
    let Some(Step::User(user)) = plan.steps.last() else { panic!("user last") };
    assert_eq!(user.flavor, Flavor::CloudInit);
    assert_eq!(user.groups, ["adm", "sudo"]);
    assert_eq!(user.gecos.as_deref(), Some("Cluster API admin"));
    assert_eq!(user.shell.as_deref(), Some("/bin/bash"));
    assert!(!user.lock_passwd);
    assert_eq!(user.sudo, ["ALL=(ALL) NOPASSWD:ALL"]);
    assert_eq!(user.ssh_authorized_keys.len(), 1);
    assert!(plan.secrets.iter().any(|s| s.starts_with("$6$rounds=4096$saltsalt$")));
}

#[test]
fn gzip_base64_roundtrip_and_encoding_aliases() {
    let bytes: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    let encoded = b64(&gzip(&bytes));
    // Wrapped over several lines, as a block scalar would carry it.
    let wrapped: String = encoded.as_bytes().chunks(60).map(|c| format!("      {}\n", std::str::from_utf8(c).unwrap())).collect();
    for encoding in ["gzip+base64", "gz+base64", "gz+b64", "GZIP+B64"] {
        let data = format!("#cloud-config\nwrite_files:\n-   path: /opt/blob\n    encoding: \"{encoding}\"\n    content: |\n{wrapped}");
        let plan = cloud_plan(&data).unwrap();
        assert_eq!(file(&plan, "/opt/blob").content, bytes, "{encoding}");
    }
    for (encoding, content, expected) in [
        ("b64", b64(b"x\0y"), b"x\0y".to_vec()),
        ("base64", "aGk".to_string(), b"hi".to_vec()),
        ("text/plain", "plain".to_string(), b"plain".to_vec()),
        ("", "plain".to_string(), b"plain".to_vec()),
    ] {
        let data = format!("#cloud-config\nwrite_files:\n- path: /opt/f\n  encoding: '{encoding}'\n  content: {content}\n");
        assert_eq!(file(&cloud_plan(&data).unwrap(), "/opt/f").content, expected, "{encoding}");
    }
    let data = "#cloud-config\nwrite_files:\n- path: /opt/f\n  encoding: zstd\n  content: x\n";
    let err = cloud_plan(data).err().unwrap();
    assert!(matches!(&err, BootstrapError::BadEncoding { path, encoding, .. } if path == "/opt/f" && encoding == "zstd"), "{err}");
}

#[test]
fn write_files_fields() {
    let data = "#cloud-config\nwrite_files:\n- path: /a\n  owner: www-data\n  permissions: '4750'\n  defer: true\n- path: /b\n  owner: none:adm\n  permissions: '644'\n- path: /c\n";
    let plan = cloud_plan(data).unwrap();
    let a = file(&plan, "/a");
    assert_eq!((a.mode, a.user.as_deref(), a.group.as_deref()), (Some(0o4750), Some("www-data"), None));
    let b = file(&plan, "/b");
    assert_eq!((b.mode, b.user.as_deref(), b.group.as_deref()), (Some(0o644), None, Some("adm")));
    assert_eq!(file(&plan, "/c").content, b"");
    // Deferred files come last (cloud-init's final stage).
    assert_eq!(step_names(&plan), ["file /b", "file /c", "file /a"]);

    for (data, key) in [
        ("#cloud-config\nwrite_files:\n- path: etc/x\n", "write_files[0].path"),
        ("#cloud-config\nwrite_files:\n- path: /etc/\n", "write_files[0].path"),
        ("#cloud-config\nwrite_files:\n- content: x\n", "write_files[0].path"),
        ("#cloud-config\nwrite_files:\n- path: /x\n  permissions: 0640\n", "write_files[0].permissions"),
        ("#cloud-config\nwrite_files:\n- path: /x\n  permissions: '0999'\n", "write_files[0].permissions"),
        ("#cloud-config\nwrite_files:\n- path: /x\n  append: maybe\n", "write_files[0].append"),
        ("#cloud-config\nwrite_files: /x\n", "write_files"),
    ] {
        match cloud_plan(data) {
            Err(BootstrapError::InvalidValue { key: k, .. }) => assert_eq!(k, key, "{data}"),
            other => panic!("{data}: {:?}", other.err()),
        }
    }
    let err = cloud_plan("#cloud-config\nwrite_files:\n- path: /x\n  source: {uri: 'http://x'}\n").err().unwrap();
    assert!(matches!(&err, BootstrapError::UnsupportedKey { key, .. } if key == "write_files[0].source"), "{err}");
}

#[test]
fn runcmd_items_are_shellified_like_cloud_init() {
    let data = "#cloud-config\nruncmd:\n- echo 'a b'\n- [ls, -l, \"it's\", 5]\n- ~\n- |\n  if true; then\n    echo multi\n  fi\n";
    let plan = cloud_plan(data).unwrap();
    assert_eq!(runcmd(&plan), ["echo 'a b'", "'ls' '-l' 'it'\\''s' '5'", "if true; then\n  echo multi\nfi\n"]);
    for data in ["#cloud-config\nruncmd:\n- [echo, true]\n", "#cloud-config\nruncmd:\n- 5\n", "#cloud-config\nruncmd: echo\n"] {
        assert!(matches!(cloud_plan(data), Err(BootstrapError::InvalidValue { .. })), "{data}");
    }
    // Empty data and a header-only document are nothing to do.
    let plan = cloud_plan("#cloud-config\n").unwrap();
    assert!(plan.steps.is_empty() && plan.last.is_none());
}

#[test]
fn unsupported_keys_are_refused_naming_the_kubeadmconfig_field() {
    let err = cloud_plan(JOIN_NTP).err().unwrap();
    assert_eq!(err.to_string(), "cloud-config key `ntp` is not supported by capssh; remove it from the KubeadmConfig (spec.ntp)");
    let err = cloud_plan(JOIN_DISK).err().unwrap();
    assert_eq!(
        err.to_string(),
        "cloud-config key `disk_setup` is not supported by capssh; remove it from the KubeadmConfig (spec.diskSetup.partitions)"
    );
    for (key, field) in [("fs_setup", "spec.diskSetup.filesystems"), ("mounts", "spec.mounts")] {
        let err = cloud_plan(&format!("#cloud-config\n{key}: []\n")).err().unwrap();
        assert!(err.to_string().contains(&format!("`{key}`")) && err.to_string().contains(field), "{err}");
    }
    let err = cloud_plan("#cloud-config\npackages: [curl]\nruncmd: []\n").err().unwrap();
    assert!(matches!(&err, BootstrapError::UnsupportedKey { key, .. } if key == "packages"), "{err}");
    let err = cloud_plan("#cloud-config\nusers:\n- name: a\n  uid: 5\n").err().unwrap();
    assert!(matches!(&err, BootstrapError::UnsupportedKey { key, .. } if key == "users[0].uid"), "{err}");
    let err = cloud_plan("#cloud-config\nusers:\n- default\n").err().unwrap();
    assert!(err.to_string().contains("users[0]"), "{err}");
    let err = cloud_plan("#cloud-config\nusers:\n- name: a\n  inactive: true\n").err().unwrap();
    assert!(err.to_string().contains("inactive"), "{err}");
}

#[test]
fn headers() {
    for data in [
        "runcmd: [x]\n",
        "#!/bin/sh\necho hi\n",
        "## template: jinja\nruncmd: [x]\n",
        "#cloud-config-archive\n- x\n",
        "Content-Type: multipart/mixed\n",
        "",
    ] {
        assert!(matches!(cloud_plan(data), Err(BootstrapError::MissingHeader)), "{data:?}");
    }
    for data in ["#cloud-config\n", "  #Cloud-Config\nruncmd: []\n", "## template: jinja\n#cloud-config\n", "## Template: Jinja \n\n#cloud-config\n"]
    {
        assert!(cloud_plan(data).is_ok(), "{data:?}");
    }
    // Without the jinja header, templates stay literal (as cloud-init leaves them).
    let plan = cloud_plan("#cloud-config\nruncmd:\n- echo {{ v1.local_hostname }}\n").unwrap();
    assert_eq!(runcmd(&plan), ["echo {{ v1.local_hostname }}"]);
}

#[test]
fn jinja_errors_name_the_variable_or_construct() {
    let data = JOIN.replace("{{ v1.provider_id }}", "{{ v1.region }}");
    match cloud_plan(&data) {
        Err(BootstrapError::UnknownTemplateVariable { name, .. }) => assert_eq!(name, "v1.region"),
        other => panic!("{:?}", other.err()),
    }
    let mut meta = meta();
    meta.values.remove("provider_id");
    let document = crate::bootstrap::cloudinit::document(INIT, &meta);
    assert!(matches!(document, Err(BootstrapError::UnknownTemplateVariable { name, .. }) if name == "ds.meta_data.provider_id"));
    let data = INIT.replace("swapoff -a", "{% if x %}swapoff -a{% endif %}");
    assert!(matches!(cloud_plan(&data), Err(BootstrapError::UnsupportedTemplate { .. })));
}

#[test]
fn yaml_errors_give_only_a_position() {
    let err = cloud_plan("#cloud-config\nwrite_files:\n- path: /a\n  content: secret\n bad\n").err().unwrap();
    match &err {
        BootstrapError::Yaml { line, .. } => assert!(*line >= 4, "{err}"),
        other => panic!("{other:?}"),
    }
    assert!(!err.to_string().contains("secret\n"));
}

#[test]
fn users_script_keeps_the_hash_off_command_lines() {
    let job = crate::bootstrap::plan(JOIN.as_bytes(), Format::CloudConfig, &meta()).unwrap();
    assert_parses(&job.script);
    let hash = "$6$rounds=4096$saltsalt$";
    let lines: Vec<&str> = job.script.lines().filter(|l| l.contains(hash)).collect();
    // Only the chpasswd here-document line, never an argument.
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].starts_with("capi:$6$"), "{lines:?}");
    assert!(job.script.contains("useradd --comment 'Cluster API admin' --shell '/bin/bash' --groups 'adm,sudo' -m 'capi'"), "{}", job.script);
    assert!(job.script.contains("capssh_group 'users 1/1' 'adm'"));
    assert!(job.script.contains("capssh_authkeys 'users 1/1' 'capi' <<'CAPSSH_EOF'\nssh-ed25519 "));
    assert!(job.script.contains("grep -qxF -e 'capi ALL=(ALL) NOPASSWD:ALL' /etc/sudoers.d/90-cloud-init-users"));
    // The rules are checked by visudo once written, and put back as they were when invalid.
    let keep = job.script.find("\tcapssh_sudoers_keep\n").expect("kept before writing");
    let check = job.script.find("\tcapssh_sudoers_check 'users 1/1'\n").expect("checked after writing");
    let write = job.script[keep..].find("/etc/sudoers.d/90-cloud-init-users").map(|i| i + keep).unwrap();
    assert!(keep < write && write < check, "keep, write, check in that order");
    assert!(job.secrets.iter().any(|s| s.starts_with(hash)));
}
