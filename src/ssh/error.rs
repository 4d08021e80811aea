//! What can go wrong talking to a host, worded for the person who has to fix it.

use crate::api::v1alpha1::conditions::reasons;
use std::time::Duration;

#[derive(thiserror::Error, Debug)]
pub enum SshError {
    #[error("cannot reach {target}: {reason}")]
    Unreachable { target: String, reason: String },

    #[error("timed out after {after:?} while {during} {target}")]
    Timeout { target: String, during: &'static str, after: Duration },

    #[error(
        "host key of {target} does not match the pinned key: expected {expected}, seen {seen}; \
         if the host was reinstalled, pin the new key in spec.hostKey.publicKeys"
    )]
    HostKeyMismatch { target: String, expected: String, seen: String },

    #[error("{target} has no pinned host key and trust on first use is off (seen {seen})")]
    HostKeyNotPinned { target: String, seen: String },

    #[error(
        "the host key {seen} of {target} is not pinned yet: capssh runs work only on hosts reached through pinned keys. \
         The SSHHost controller pins a key seen on first use when it probes a free host; or pin it in spec.hostKey.publicKeys"
    )]
    NotPinnedYet { target: String, seen: String },

    #[error("authentication as {user} on {target} failed: the server refused the {method}")]
    AuthFailed { target: String, user: String, method: &'static str },

    #[error(
        "sudo on {target} asks {user} for a password: allow passwordless sudo for that user \
         (NOPASSWD in sudoers) or log in as root"
    )]
    SudoNeedsPassword { target: String, user: String },

    #[error("the private key for {target} cannot be used: {reason}")]
    InvalidKey { target: String, reason: String },

    #[error("host key pin {pin:?} is not an OpenSSH public key, a known_hosts line or a SHA256: fingerprint: {reason}")]
    InvalidPin { pin: String, reason: String },

    #[error("command on {target} ran longer than {after:?} and was killed")]
    CommandTimeout { target: String, after: Duration },

    #[error("connection to {target} was lost: {reason}")]
    Disconnected { target: String, reason: String },

    #[error("SSH error with {target}: {reason}")]
    Protocol { target: String, reason: String },

    #[error("command on {target} failed with exit status {status}: {stderr}")]
    CommandFailed { target: String, status: i32, stderr: String },
}

impl SshError {
    /// Whether trying again later may succeed without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            SshError::Unreachable { .. }
                | SshError::Timeout { .. }
                | SshError::Disconnected { .. }
                | SshError::Protocol { .. }
                | SshError::CommandTimeout { .. }
        )
    }

    /// The condition and event reason (constants of the API: see `conditions::reasons`).
    pub fn reason(&self) -> &'static str {
        match self {
            SshError::Unreachable { .. } | SshError::Timeout { .. } | SshError::Disconnected { .. } => reasons::HOST_UNREACHABLE,
            SshError::HostKeyMismatch { .. } => reasons::HOST_KEY_MISMATCH,
            SshError::HostKeyNotPinned { .. } | SshError::NotPinnedYet { .. } => reasons::HOST_KEY_NOT_PINNED,
            SshError::AuthFailed { .. } | SshError::InvalidKey { .. } => reasons::AUTHENTICATION_FAILED,
            SshError::SudoNeedsPassword { .. } => reasons::SUDO_NEEDS_PASSWORD,
            SshError::InvalidPin { .. } => reasons::INVALID_HOST_KEY_PIN,
            SshError::CommandTimeout { .. } => reasons::COMMAND_TIMED_OUT,
            SshError::Protocol { .. } => reasons::SSH_PROTOCOL_ERROR,
            SshError::CommandFailed { .. } => reasons::COMMAND_FAILED,
        }
    }
}
