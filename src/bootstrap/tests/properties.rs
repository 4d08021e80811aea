//! Properties over any input (proptest).

use crate::bootstrap::shell::quote;
use proptest::prelude::*;

/// What `sh -c 'printf %s <word>'` prints.
fn printed_by_sh(word: &str) -> Vec<u8> {
    let output = std::process::Command::new("sh").arg("-c").arg(format!("printf %s {word}")).output().expect("sh runs");
    assert!(output.status.success(), "sh: {}", String::from_utf8_lossy(&output.stderr));
    output.stdout
}

proptest! {
    // Each case starts a shell: fewer cases than the default, still every character class.
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Any text (an argument cannot hold NUL) survives quoting through a real sh byte for byte:
    /// quotes, backslashes, `$`, backquotes, newlines, globs, non-ASCII.
    #[test]
    fn quoting_round_trips_through_sh(text in "[^\u{0}]{0,40}|[-'\"\\\\$`!*?\\[\\]{}();&|<> \t\n~#=%a-z]{0,40}") {
        prop_assert_eq!(printed_by_sh(&quote(&text)), text.as_bytes());
    }
}
