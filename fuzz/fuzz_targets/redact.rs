//! Redaction runs on everything capssh shows (job logs, errors): any text, any known secrets.
//! Known secrets of redactable length never survive.
#![no_main]

use capssh::redact::{REDACTED, Redactor, redact, secrets_in};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (secrets, text) = text.split_once('\0').unwrap_or(("", &text));
    drop(redact(text));
    drop(secrets_in(text));
    let secrets: Vec<String> = secrets.split('\u{1}').map(str::to_string).collect();
    let redacted = Redactor::new(secrets.clone()).redact(text);
    for secret in secrets.iter().map(|s| s.trim()) {
        // Shorter ones are not redacted by design; one inside `[REDACTED]`, or that brackets
        // can rebuild around it, cannot be told apart from the marker.
        if secret.len() >= 6 && !secret.contains(['[', ']']) && !REDACTED.contains(secret) {
            assert!(!redacted.contains(secret), "{secret:?} survived in {redacted:?}");
        }
    }
});
