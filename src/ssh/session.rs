//! One authenticated SSH connection to a host (optionally through a bastion), and the commands
//! run over it.

use super::SshError;
use super::hostkey::{HostKeyPolicy, Verdict, fingerprint};
use russh::client::{self, AuthResult, Handle};
use russh::keys::ssh_key::PublicKey;
use russh::keys::{PrivateKeyWithHashAlg, decode_secret_key};
use russh::{ChannelMsg, Disconnect};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How to log in.
#[derive(Clone)]
pub enum Credentials {
    /// An OpenSSH or PEM private key, with its passphrase when encrypted.
    Key {
        private_key: String,
        passphrase: Option<String>,
    },
    Password(String),
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print secrets, not even in debug output.
        match self {
            Credentials::Key { .. } => f.write_str("Credentials::Key(..)"),
            Credentials::Password(_) => f.write_str("Credentials::Password(..)"),
        }
    }
}

/// One SSH server to log in to.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub address: String,
    pub port: u16,
    pub user: String,
    pub credentials: Credentials,
    pub host_keys: HostKeyPolicy,
}

impl Endpoint {
    pub fn display(&self) -> String {
        format!("{}@{}:{}", self.user, self.address, self.port)
    }
}

/// A host, reached directly or through a jump host.
#[derive(Clone, Debug)]
pub struct Target {
    pub host: Endpoint,
    pub bastion: Option<Endpoint>,
}

#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// TCP connect and the SSH handshake, together.
    pub connect: Duration,
    /// The TCP connect alone (direct connections; through a bastion it is the bastion's to time).
    pub tcp: Duration,
    pub auth: Duration,
    pub keepalive: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        let connect = Duration::from_secs(10);
        Self { connect, tcp: connect, auth: Duration::from_secs(15), keepalive: Duration::from_secs(15) }
    }
}

/// The most of a command's stdout (and of its stderr) kept in memory: capssh's own commands
/// print little; a host that prints without end must not exhaust the manager's memory.
pub const MAX_OUTPUT_BYTES: usize = 1024 * 1024;

/// What a command printed and how it ended.
#[derive(Debug, Default)]
pub struct Output {
    pub status: i32,
    /// The first [`MAX_OUTPUT_BYTES`] of stdout.
    pub stdout: Vec<u8>,
    /// The first [`MAX_OUTPUT_BYTES`] of stderr.
    pub stderr: Vec<u8>,
    /// How many bytes were dropped beyond those limits.
    pub dropped: usize,
}

impl Output {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Checks the server's key against the endpoint's policy and remembers what it saw.
struct Verifier {
    policy: HostKeyPolicy,
    seen: Arc<Mutex<Option<(PublicKey, Verdict)>>>,
}

impl client::Handler for Verifier {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &russh::keys::PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            // Host certificates need a CA to trust; capssh pins keys.
            return Ok(false);
        };
        let verdict = self.policy.judge(key);
        let accepted = verdict != Verdict::Refused;
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some((key.clone(), verdict));
        }
        Ok(accepted)
    }
}

/// An authenticated connection. Commands run as root: directly when the login user is root,
/// through `sudo -n` otherwise.
pub struct Session {
    handle: Handle<Verifier>,
    // Kept alive for the tunnel; dropped with the session.
    _bastion: Option<Handle<Verifier>>,
    target: String,
    user: String,
    host_key: PublicKey,
    trusted_on_first_use: bool,
    /// The jump host's key, when it was accepted only by trust on first use.
    bastion_key_on_first_use: Option<PublicKey>,
    /// Set by the first failure that may have left the connection unusable: the pool then
    /// opens a new one instead of handing this out again.
    broken: std::sync::atomic::AtomicBool,
}

impl Session {
    pub async fn connect(target: &Target, timeouts: &Timeouts) -> Result<Session, SshError> {
        let config = Arc::new(client::Config { keepalive_interval: Some(timeouts.keepalive), keepalive_max: 3, nodelay: true, ..Default::default() });
        let (bastion, bastion_key_on_first_use) = match &target.bastion {
            Some(jump) => {
                let (handle, key, verdict) = open(jump, config.clone(), timeouts, None).await?;
                (Some(handle), (verdict == Verdict::TrustedOnFirstUse).then_some(key))
            }
            None => (None, None),
        };
        let (handle, host_key, verdict) = open(&target.host, config, timeouts, bastion.as_ref()).await?;
        Ok(Session {
            handle,
            _bastion: bastion,
            target: target.host.display(),
            user: target.host.user.clone(),
            host_key,
            trusted_on_first_use: verdict == Verdict::TrustedOnFirstUse,
            bastion_key_on_first_use,
            broken: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The host's key as an OpenSSH line (to record as the pin after trust on first use).
    pub fn host_key_openssh(&self) -> String {
        self.host_key.to_openssh().unwrap_or_default()
    }

    pub fn host_key_fingerprint(&self) -> String {
        fingerprint(&self.host_key)
    }

    /// True when the host was accepted only because trust on first use is on: the caller must
    /// record [`Session::host_key_openssh`] as the pin before relying on the host.
    pub fn trusted_on_first_use(&self) -> bool {
        self.trusted_on_first_use
    }

    /// The jump host's key (OpenSSH line) when it was accepted by trust on first use: the
    /// caller records it as the bastion's pin.
    pub fn bastion_key_on_first_use(&self) -> Option<String> {
        self.bastion_key_on_first_use.as_ref().map(|k| k.to_openssh().unwrap_or_default())
    }

    /// Refuses a session whose host or jump host was accepted only by trust on first use: work
    /// (prepare, bootstrap, reset) runs only on hosts reached through pinned keys.
    pub fn require_pinned(&self) -> Result<(), SshError> {
        if self.trusted_on_first_use {
            return Err(SshError::NotPinnedYet { target: self.target.clone(), seen: self.host_key_fingerprint() });
        }
        if let Some(key) = &self.bastion_key_on_first_use {
            return Err(SshError::NotPinnedYet { target: format!("the jump host of {}", self.target), seen: fingerprint(key) });
        }
        Ok(())
    }

    pub fn target(&self) -> &str {
        &self.target
    }

    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// Whether the pool may hand this session out again: open, and no failure since that may
    /// have broken it.
    pub fn is_usable(&self) -> bool {
        !self.is_closed() && !self.broken.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Runs a shell command as root. `stdin` is fed to it (use it for anything secret: it never
    /// shows up in `ps`). `timeout` kills the command on the host when it runs too long.
    pub async fn run(&self, shell: &str, stdin: Option<&[u8]>, timeout: Duration) -> Result<Output, SshError> {
        self.run_streaming(shell, stdin, timeout, |_, _| {}).await
    }

    /// Like [`Session::run`], calling `sink(is_stderr, chunk)` as output arrives. Any failure
    /// but a refused sudo marks the session broken (see [`Session::is_usable`]).
    pub async fn run_streaming(
        &self,
        shell: &str,
        stdin: Option<&[u8]>,
        timeout: Duration,
        sink: impl FnMut(bool, &[u8]),
    ) -> Result<Output, SshError> {
        let result = super::wait::on_host(self.exec(shell, stdin, timeout, sink)).await;
        if let Err(err) = &result
            && !matches!(err, SshError::SudoNeedsPassword { .. })
        {
            self.broken.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        result
    }

    async fn exec(&self, shell: &str, stdin: Option<&[u8]>, timeout: Duration, mut sink: impl FnMut(bool, &[u8])) -> Result<Output, SshError> {
        let command = self.privileged(shell, timeout);
        let lost = |err: russh::Error| SshError::Disconnected { target: self.target.clone(), reason: err.to_string() };
        let mut channel = self.handle.channel_open_session().await.map_err(lost)?;
        channel.exec(true, command).await.map_err(lost)?;
        if let Some(input) = stdin {
            channel.data(input).await.map_err(lost)?;
        }
        channel.eof().await.map_err(lost)?;

        let mut output = Output { status: -1, ..Default::default() };
        let mut exited = false;
        // Backstop: the host-side `timeout` normally ends the command first.
        let deadline = tokio::time::Instant::now() + timeout + Duration::from_secs(10);
        loop {
            let message = match tokio::time::timeout_at(deadline, channel.wait()).await {
                Ok(Some(message)) => message,
                Ok(None) => break,
                Err(_) => {
                    let _ = channel.close().await;
                    return Err(SshError::CommandTimeout { target: self.target.clone(), after: timeout });
                }
            };
            match message {
                ChannelMsg::Data { data } => {
                    sink(false, &data);
                    output.dropped += keep_bounded(&mut output.stdout, &data);
                }
                ChannelMsg::ExtendedData { data, ext: 1 } => {
                    sink(true, &data);
                    output.dropped += keep_bounded(&mut output.stderr, &data);
                }
                ChannelMsg::ExitStatus { exit_status } => {
                    output.status = exit_status as i32;
                    exited = true;
                }
                ChannelMsg::ExitSignal { signal_name, .. } => {
                    output.status = 128 + signal_number(&signal_name);
                    exited = true;
                }
                _ => {}
            }
        }
        if !exited {
            return Err(SshError::Disconnected { target: self.target.clone(), reason: "the connection closed before the command finished".into() });
        }
        // 124: coreutils timeout sent TERM; 137: it had to KILL.
        if (output.status == 124 || output.status == 137) && String::from_utf8_lossy(&output.stderr).contains("capssh: command timed out") {
            return Err(SshError::CommandTimeout { target: self.target.clone(), after: timeout });
        }
        if self.user != "root" && output.status == 1 {
            let stderr = String::from_utf8_lossy(&output.stderr);
            if stderr.contains("sudo: a password is required") || stderr.contains("sudo: a terminal is required") {
                return Err(SshError::SudoNeedsPassword { target: self.target.clone(), user: self.user.clone() });
            }
        }
        Ok(output)
    }

    /// Runs a command and fails on a non-zero exit, with its stderr in the error.
    pub async fn run_checked(&self, shell: &str, stdin: Option<&[u8]>, timeout: Duration) -> Result<Output, SshError> {
        let output = self.run(shell, stdin, timeout).await?;
        if output.status != 0 {
            // Its end says what went wrong; a few kB of it are enough for any message.
            let text = output.stderr_text();
            let mut from = text.len().saturating_sub(4096);
            while !text.is_char_boundary(from) {
                from += 1;
            }
            let stderr = crate::redact::redact(text[from..].trim());
            return Err(SshError::CommandFailed { target: self.target.clone(), status: output.status, stderr });
        }
        Ok(output)
    }

    /// Writes `bytes` to `path` on the host atomically, with `mode`, through stdin.
    pub async fn upload(&self, path: &str, bytes: &[u8], mode: u32) -> Result<(), SshError> {
        let quoted = shell_quote(path);
        let tmp = shell_quote(&format!("{path}.capssh-upload"));
        let script = format!("umask 077 && cat > {tmp} && chmod {mode:o} {tmp} && mv -f {tmp} {quoted}");
        self.run_checked(&script, Some(bytes), Duration::from_secs(120)).await.map(|_| ())
    }

    pub async fn close(self) {
        let _ = self.handle.disconnect(Disconnect::ByApplication, "", "en").await;
    }

    /// The command line the SSH server runs: the script is passed to `sh -c` as one quoted
    /// argument (no secrets ever go here), under sudo for non-root users, bounded by `timeout`.
    fn privileged(&self, shell: &str, timeout: Duration) -> String {
        let secs = timeout.as_secs().max(1);
        // timeout(1) runs the command in its own process group and kills all of it.
        let bounded = format!(
            "timeout -k 5 {secs} sh -c {} || {{ rc=$?; [ $rc -eq 124 ] || [ $rc -eq 137 ] && echo 'capssh: command timed out' >&2; exit $rc; }}",
            shell_quote(shell)
        );
        if self.user == "root" { bounded } else { format!("sudo -n -- sh -c {}", shell_quote(&bounded)) }
    }
}

async fn open(
    endpoint: &Endpoint,
    config: Arc<client::Config>,
    timeouts: &Timeouts,
    through: Option<&Handle<Verifier>>,
) -> Result<(Handle<Verifier>, PublicKey, Verdict), SshError> {
    let target = endpoint.display();
    let seen = Arc::new(Mutex::new(None));
    let verifier = Verifier { policy: endpoint.host_keys.clone(), seen: seen.clone() };
    let connecting = async {
        match through {
            None => {
                let tcp = tokio::net::TcpStream::connect((endpoint.address.as_str(), endpoint.port));
                let stream = tokio::time::timeout(timeouts.tcp, tcp).await.map_err(|_| russh::Error::ConnectionTimeout)??;
                stream.set_nodelay(config.nodelay)?;
                client::connect_stream(config, stream, verifier).await
            }
            Some(jump) => {
                let channel = jump.channel_open_direct_tcpip(endpoint.address.clone(), endpoint.port as u32, "127.0.0.1", 0).await?;
                client::connect_stream(config, channel.into_stream(), verifier).await
            }
        }
    };
    let connected = tokio::time::timeout(timeouts.connect, connecting).await.map_err(|_| SshError::Timeout {
        target: target.clone(),
        during: "connecting to",
        after: timeouts.connect,
    })?;
    let seen_key = seen.lock().ok().and_then(|mut s| s.take());
    let mut handle = match connected {
        Ok(handle) => handle,
        Err(err) => {
            return Err(match (&err, seen_key) {
                (russh::Error::UnknownKey, Some((key, _))) => endpoint.host_keys.refusal(&target, &key),
                (russh::Error::IO(io), _) => SshError::Unreachable { target, reason: io.to_string() },
                (russh::Error::ConnectionTimeout | russh::Error::KeepaliveTimeout, _) => SshError::Unreachable { target, reason: err.to_string() },
                (russh::Error::Disconnect, _) => SshError::Unreachable { target, reason: "the server closed the connection".into() },
                _ => SshError::Protocol { target, reason: err.to_string() },
            });
        }
    };
    let (host_key, verdict) =
        seen_key.ok_or_else(|| SshError::Protocol { target: target.clone(), reason: "the server presented no host key".into() })?;

    let authenticating = authenticate(&mut handle, endpoint, &target);
    tokio::time::timeout(timeouts.auth, authenticating).await.map_err(|_| SshError::Timeout {
        target: target.clone(),
        during: "authenticating to",
        after: timeouts.auth,
    })??;
    Ok((handle, host_key, verdict))
}

async fn authenticate(handle: &mut Handle<Verifier>, endpoint: &Endpoint, target: &str) -> Result<(), SshError> {
    let protocol = |err: russh::Error| SshError::Protocol { target: target.to_string(), reason: err.to_string() };
    let (result, method) = match &endpoint.credentials {
        Credentials::Key { private_key, passphrase } => {
            let key = decode_secret_key(private_key, passphrase.as_deref()).map_err(|err| SshError::InvalidKey {
                target: target.to_string(),
                // The library's message names the problem (encrypted, unsupported, malformed), not the key.
                reason: err.to_string(),
            })?;
            let hash = handle.best_supported_rsa_hash().await.map_err(protocol)?.flatten();
            let key = PrivateKeyWithHashAlg::new(Arc::new(key), hash);
            (handle.authenticate_publickey(endpoint.user.clone(), key).await.map_err(protocol)?, "public key")
        }
        Credentials::Password(password) => {
            (handle.authenticate_password(endpoint.user.clone(), password.clone()).await.map_err(protocol)?, "password")
        }
    };
    match result {
        AuthResult::Success => Ok(()),
        AuthResult::Failure { .. } => Err(SshError::AuthFailed { target: target.to_string(), user: endpoint.user.clone(), method }),
    }
}

/// Appends what fits under [`MAX_OUTPUT_BYTES`]; returns how many bytes it dropped.
fn keep_bounded(buffer: &mut Vec<u8>, data: &[u8]) -> usize {
    let room = MAX_OUTPUT_BYTES.saturating_sub(buffer.len()).min(data.len());
    buffer.extend_from_slice(&data[..room]);
    data.len() - room
}

/// Single-quotes a string for POSIX sh.
pub fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

fn signal_number(sig: &russh::Sig) -> i32 {
    match sig {
        russh::Sig::HUP => 1,
        russh::Sig::INT => 2,
        russh::Sig::QUIT => 3,
        russh::Sig::ILL => 4,
        russh::Sig::ABRT => 6,
        russh::Sig::FPE => 8,
        russh::Sig::KILL => 9,
        russh::Sig::USR1 => 10,
        russh::Sig::SEGV => 11,
        russh::Sig::PIPE => 13,
        russh::Sig::ALRM => 14,
        russh::Sig::TERM => 15,
        _ => 0,
    }
}
