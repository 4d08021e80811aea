//! Host key pinning. A pin is an OpenSSH public key line, a known_hosts line or a SHA256
//! fingerprint; a host is accepted only when its key matches one of them (or, with trust on
//! first use and no pin yet, once, after which the caller records the key as the pin).

use super::SshError;
use russh::keys::ssh_key::{HashAlg, PublicKey, known_hosts::Entry};
use std::str::FromStr;

/// One accepted host key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pin {
    Key(PublicKey),
    Fingerprint(String),
}

impl Pin {
    pub fn parse(text: &str) -> Result<Pin, SshError> {
        let text = text.trim();
        let invalid = |reason: String| SshError::InvalidPin { pin: text.to_string(), reason };
        if let Some(b64) = text.strip_prefix("SHA256:") {
            if b64.is_empty() || !b64.chars().all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/') {
                return Err(invalid("a SHA256 fingerprint is base64 without padding, as ssh-keygen -lf prints".into()));
            }
            return Ok(Pin::Fingerprint(text.to_string()));
        }
        if let Ok(key) = PublicKey::from_openssh(text) {
            return Ok(Pin::Key(key));
        }
        let entry = Entry::from_str(text).map_err(|err| invalid(err.to_string()))?;
        // `@revoked` says never to trust the key; `@cert-authority` trusts certificates signed by
        // it, which capssh does not check: neither is a pin.
        if let Some(marker) = entry.marker() {
            return Err(invalid(format!("a known_hosts line marked {} is not a pin of the host's key", marker.as_str())));
        }
        Ok(Pin::Key(entry.public_key().clone()))
    }

    fn matches(&self, seen: &PublicKey) -> bool {
        match self {
            // Comments differ between copies of a key: compare the key material only.
            Pin::Key(key) => key.key_data() == seen.key_data(),
            Pin::Fingerprint(fp) => *fp == fingerprint(seen),
        }
    }

    fn describe(&self) -> String {
        match self {
            Pin::Key(key) => fingerprint(key),
            Pin::Fingerprint(fp) => fp.clone(),
        }
    }
}

/// `SHA256:<base64>`, exactly as `ssh-keygen -lf` prints it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// The host key policy of one endpoint.
#[derive(Clone, Debug, Default)]
pub struct HostKeyPolicy {
    pub pins: Vec<Pin>,
    pub trust_on_first_use: bool,
}

/// What the policy says about a key the server presented.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It matches a pin.
    Pinned,
    /// No pin yet and trust on first use is on: accept, and record the key.
    TrustedOnFirstUse,
    /// Refuse.
    Refused,
}

impl HostKeyPolicy {
    pub fn parse(pins: &[String], trust_on_first_use: bool) -> Result<Self, SshError> {
        Ok(Self { pins: pins.iter().map(|p| Pin::parse(p)).collect::<Result<_, _>>()?, trust_on_first_use })
    }

    pub fn judge(&self, seen: &PublicKey) -> Verdict {
        if self.pins.iter().any(|pin| pin.matches(seen)) {
            Verdict::Pinned
        } else if self.pins.is_empty() && self.trust_on_first_use {
            Verdict::TrustedOnFirstUse
        } else {
            Verdict::Refused
        }
    }

    /// The error for a refused key, naming what was expected and what was seen.
    pub fn refusal(&self, target: &str, seen: &PublicKey) -> SshError {
        if self.pins.is_empty() {
            SshError::HostKeyNotPinned { target: target.to_string(), seen: fingerprint(seen) }
        } else {
            let expected = self.pins.iter().map(Pin::describe).collect::<Vec<_>>().join(" or ");
            SshError::HostKeyMismatch { target: target.to_string(), expected, seen: fingerprint(seen) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl host1";
    const OTHER: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILM+rvN+ot98qgEN796jTiQfZfG1KaT0PtFDJ/XFSqti other";

    #[test]
    fn revoked_and_certificate_authority_lines_are_not_pins() {
        let revoked = format!("@revoked host1,198.18.1.2 {KEY}");
        assert!(matches!(Pin::parse(&revoked), Err(SshError::InvalidPin { reason, .. }) if reason.contains("@revoked")));
        assert!(Pin::parse(&format!("@cert-authority *.example {KEY}")).is_err());
        assert!(Pin::parse(&format!("host1,198.18.1.2 {KEY}")).is_ok());
    }

    fn key(text: &str) -> PublicKey {
        PublicKey::from_openssh(text).unwrap()
    }

    #[test]
    fn every_pin_form_matches_the_same_key() {
        let seen = key(KEY);
        let fp = fingerprint(&seen);
        assert!(fp.starts_with("SHA256:") && !fp.ends_with('='));
        for pin in [
            KEY.to_string(),
            format!("[198.18.0.2]:22 {KEY}"),
            "198.18.0.2 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl".into(),
            fp,
        ] {
            let policy = HostKeyPolicy::parse(std::slice::from_ref(&pin), false).unwrap();
            assert_eq!(policy.judge(&seen), Verdict::Pinned, "{pin}");
        }
    }

    #[test]
    fn a_different_key_is_refused_with_both_fingerprints() {
        let policy = HostKeyPolicy::parse(&[KEY.to_string()], true).unwrap();
        let other = key(OTHER);
        assert_eq!(policy.judge(&other), Verdict::Refused, "a pin disables trust on first use");
        let message = policy.refusal("h1:22", &other).to_string();
        assert!(message.contains(&fingerprint(&key(KEY))) && message.contains(&fingerprint(&other)), "{message}");
    }

    #[test]
    fn trust_on_first_use_only_without_pins() {
        let seen = key(KEY);
        assert_eq!(HostKeyPolicy::parse(&[], true).unwrap().judge(&seen), Verdict::TrustedOnFirstUse);
        assert_eq!(HostKeyPolicy::parse(&[], false).unwrap().judge(&seen), Verdict::Refused);
    }

    #[test]
    fn garbage_pins_are_refused() {
        assert!(Pin::parse("ssh-ed25519 not-base64!").is_err());
        assert!(Pin::parse("SHA256:").is_err());
        assert!(Pin::parse("hello").is_err());
    }
}
