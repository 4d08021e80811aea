//! `## template: jinja` rendering (bootstrap::jinja is private: reached through plan, which
//! renders before anything else), with metadata values that hold YAML and shell syntax.
#![no_main]

use capssh::bootstrap::{Format, MachineMetadata, plan};
use libfuzzer_sys::fuzz_target;

const HEADER: &str = "## template: jinja\n";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let document = if text.starts_with(HEADER) { text.to_string() } else { format!("{HEADER}{text}") };
    let mut meta = MachineMetadata::default();
    for (key, value) in [
        ("local_hostname", "node-1"),
        ("instance_id", "host-1"),
        ("provider_id", "ssh://default/host-1"),
        ("quoted", "it's \"quoted\": {{ v1.local_hostname }} $(id)"),
        ("empty", ""),
    ] {
        meta.values.insert(key.to_string(), value.to_string());
    }
    if let Err(err) = plan(document.as_bytes(), Format::CloudConfig, &meta) {
        drop(err.to_string());
    }
});
