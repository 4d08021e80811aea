//! Size limits: bootstrap data, rendered templates, and decoded file contents (gzip bombs).

use super::*;
use crate::bootstrap::{MAX_DATA_BYTES, MAX_FILE_BYTES, MAX_TOTAL_FILE_BYTES};
use std::io::Write as _;

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// About 1 MiB of gzip that inflates to about 1 GiB of zeros: gzip members of 1 MiB of zeros
/// each, one after another (gunzip reads them all, as cloud-init's does).
pub(super) fn gzip_bomb() -> Vec<u8> {
    let member = gzip(&vec![0u8; 1 << 20]);
    member.repeat((1 << 20) / member.len())
}

/// The error for a plan that must fail (a plan has no `Debug`: it holds secrets).
fn refused(plan: Result<Plan, BootstrapError>) -> BootstrapError {
    match plan {
        Ok(_) => panic!("the plan was accepted"),
        Err(err) => err,
    }
}

fn cloud_file(path: &str, encoding: &str, content: &str) -> String {
    format!("#cloud-config\nwrite_files:\n- path: {path}\n  encoding: {encoding}\n  content: {content}\n")
}

/// Ignition data with CABPK's kubeadm.service and these files.
fn ignition(files: &str) -> String {
    let unit = r#"{"name":"kubeadm.service","enabled":true,"contents":"[Service]\nType=oneshot\nExecStart=/bin/bash /etc/kubeadm.sh\n"}"#;
    format!(r#"{{"ignition":{{"version":"2.3.0"}},"storage":{{"files":[{files}]}},"systemd":{{"units":[{unit}]}}}}"#)
}

fn ignition_file(path: &str, gzipped: &[u8]) -> String {
    ignition(&format!(r#"{{"path":"{path}","contents":{{"compression":"gzip","source":"data:;base64,{}"}}}}"#, b64(gzipped)))
}

#[test]
fn a_gzip_bomb_is_refused_naming_the_file_and_the_limit() {
    let bomb = gzip_bomb();
    assert!(bomb.len() <= 1 << 20 && bomb.len() > 1000 << 10, "{}", bomb.len());
    for encoding in ["gzip+base64", "gz+b64"] {
        let data = cloud_file("/etc/bomb", encoding, &b64(&bomb));
        let started = std::time::Instant::now();
        let err = crate::bootstrap::plan(data.as_bytes(), Format::CloudConfig, &meta()).unwrap_err();
        assert!(matches!(&err, BootstrapError::FileTooLarge { path, limit } if path == "/etc/bomb" && *limit == MAX_FILE_BYTES), "{err:?}");
        let message = err.to_string();
        assert!(message.contains("/etc/bomb") && message.contains("16 MiB (16777216 bytes)"), "{message}");
        // Inflating stops at the limit instead of going on to a GiB (seconds, not minutes, in a debug build).
        eprintln!("{encoding} bomb refused in {:?}", started.elapsed());
    }
    let err = crate::bootstrap::plan(ignition_file("/etc/bomb", &bomb).as_bytes(), Format::Ignition, &meta()).unwrap_err();
    assert!(matches!(&err, BootstrapError::FileTooLarge { path, .. } if path == "/etc/bomb"), "{err:?}");
    assert!(err.to_string().contains("16 MiB"), "{err}");
}

#[test]
fn one_file_may_decode_to_the_limit_and_not_a_byte_more() {
    let at_limit = gzip(&vec![b'a'; MAX_FILE_BYTES]);
    let plan = cloud_plan(&cloud_file("/opt/full", "gzip+base64", &b64(&at_limit))).unwrap();
    assert_eq!(file(&plan, "/opt/full").content.len(), MAX_FILE_BYTES);
    let plan = crate::bootstrap::ignition::parse(&ignition_file("/opt/full", &at_limit)).unwrap();
    assert_eq!(file(&plan, "/opt/full").content.len(), MAX_FILE_BYTES);

    let over = gzip(&vec![b'a'; MAX_FILE_BYTES + 1]);
    let err = refused(cloud_plan(&cloud_file("/opt/over", "gzip+base64", &b64(&over))));
    assert!(matches!(&err, BootstrapError::FileTooLarge { path, .. } if path == "/opt/over"), "{err:?}");
    let err = refused(crate::bootstrap::ignition::parse(&ignition_file("/opt/over", &over)));
    assert!(matches!(&err, BootstrapError::FileTooLarge { path, .. } if path == "/opt/over"), "{err:?}");
}

#[test]
fn all_files_together_have_a_limit() {
    let full = b64(&gzip(&vec![0u8; MAX_FILE_BYTES]));
    let files = MAX_TOTAL_FILE_BYTES / MAX_FILE_BYTES;
    let mut data = String::from("#cloud-config\nwrite_files:\n");
    for i in 0..files {
        data.push_str(&format!("- path: /opt/f{i}\n  encoding: gzip+base64\n  content: {full}\n"));
    }
    assert_eq!(cloud_plan(&data).unwrap().files().count(), files, "exactly the total fits");
    data.push_str("- path: /opt/one-more\n  content: x\n");
    let err = refused(cloud_plan(&data));
    assert!(matches!(&err, BootstrapError::FilesTooLarge { path, limit } if path == "/opt/one-more" && *limit == MAX_TOTAL_FILE_BYTES), "{err:?}");
    assert!(err.to_string().contains("64 MiB (67108864 bytes) in all (exceeded at /opt/one-more)"), "{err}");

    let entry = format!(r#"{{"path":"/opt/f","contents":{{"compression":"gzip","source":"data:;base64,{full}"}}}}"#);
    let entries = vec![entry; files + 1].join(",");
    let err = refused(crate::bootstrap::ignition::parse(&ignition(&entries)));
    assert!(matches!(err, BootstrapError::FilesTooLarge { .. }), "{err:?}");
}

#[test]
fn bootstrap_data_and_rendered_templates_have_a_limit() {
    let line = "# padding padding padding padding padding padding padding padding\n";
    let data = format!("#cloud-config\n{}", line.repeat(MAX_DATA_BYTES / line.len() + 1));
    for format in [Format::CloudConfig, Format::Ignition] {
        let err = crate::bootstrap::plan(data.as_bytes(), format, &meta()).unwrap_err();
        assert!(matches!(err, BootstrapError::DataTooLarge { .. }), "{err:?}");
        assert!(err.to_string().contains("larger than 4 MiB (4194304 bytes)"), "{err}");
    }
    // Small data, large once rendered: each 12-byte variable becomes 1 KiB.
    let mut meta = meta();
    meta.values.insert("long".to_string(), "x".repeat(1024));
    let data = format!("## template: jinja\n#cloud-config\n# {}\n", "{{ v1.long }}".repeat(5000));
    assert!(data.len() < 100_000);
    let err = crate::bootstrap::plan(data.as_bytes(), Format::CloudConfig, &meta).unwrap_err();
    assert!(err.to_string().contains("rendered `## template: jinja` bootstrap data is larger than 4 MiB"), "{err}");
}

#[test]
fn yaml_aliases_cannot_multiply_file_contents() {
    // One large anchored string, written by many files through aliases.
    let anchor = "y".repeat(3 << 20);
    let mut data = format!("#cloud-config\nwrite_files:\n- path: /opt/a0\n  content: &big {anchor}\n");
    for i in 1..100 {
        data.push_str(&format!("- path: /opt/a{i}\n  content: *big\n"));
    }
    assert!(data.len() < MAX_DATA_BYTES);
    let err = crate::bootstrap::plan(data.as_bytes(), Format::CloudConfig, &meta()).unwrap_err();
    // The parser's own limit on scalar bytes (64 MiB, aliases counted) stops it first.
    assert!(matches!(err, BootstrapError::YamlLimits { .. }), "{err:?}");
    assert!(err.to_string().contains("limits on aliases"), "{err}");
    // A billion laughs: nested aliases of aliases.
    let mut data = String::from("#cloud-config\nbootcmd:\n- &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..12 {
        let previous = format!("*a{}", i - 1);
        data.push_str(&format!("- &a{i} [{}]\n", [previous.as_str(); 10].join(", ")));
    }
    let err = crate::bootstrap::plan(data.as_bytes(), Format::CloudConfig, &meta()).unwrap_err();
    assert!(matches!(err, BootstrapError::YamlLimits { .. }), "{err:?}");
}
