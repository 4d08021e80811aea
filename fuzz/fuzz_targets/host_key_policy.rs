//! Host key pins (one per line: OpenSSH keys, known_hosts lines, SHA256 fingerprints). A policy
//! must accept each key it pins, and each key's own fingerprint must pin it too.
#![no_main]

use capssh::ssh::hostkey::{HostKeyPolicy, Pin, Verdict, fingerprint};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest);
    let pins: Vec<String> = text.lines().map(str::to_string).collect();
    let Ok(policy) = HostKeyPolicy::parse(&pins, first & 1 == 1) else { return };
    for pin in &policy.pins {
        if let Pin::Key(key) = pin {
            assert_eq!(policy.judge(key), Verdict::Pinned);
            let by_fingerprint = HostKeyPolicy::parse(&[fingerprint(key)], false).expect("a fingerprint is a pin");
            assert_eq!(by_fingerprint.judge(key), Verdict::Pinned);
            drop(policy.refusal("fuzz", key).to_string());
        }
    }
});
