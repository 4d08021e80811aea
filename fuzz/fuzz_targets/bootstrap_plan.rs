//! The bootstrap translator on any bytes, read as cloud-config and as ignition: it must refuse
//! or plan, never panic, hang or exhaust memory (libFuzzer's -rss_limit_mb and -timeout).
#![no_main]

use capssh::bootstrap::{Format, MachineMetadata, plan};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut meta = MachineMetadata::default();
    for (key, value) in [("local_hostname", "node-1"), ("instance_id", "host-1"), ("provider_id", "ssh://default/host-1")] {
        meta.values.insert(key.to_string(), value.to_string());
    }
    for format in [Format::CloudConfig, Format::Ignition] {
        match plan(data, format, &meta) {
            Ok(job) => assert!(job.script.starts_with("#!/bin/sh\n")),
            // Messages are built from the data: building one must not panic either.
            Err(err) => drop(err.to_string()),
        }
    }
});
