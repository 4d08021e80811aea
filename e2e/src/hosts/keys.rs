//! Client and host keys, made with ssh-keygen.

#[allow(unused_imports)]
use super::*;

pub(super) const CLIENT_KEYS: [(&str, &[&str]); 4] = [
    ("client_ed25519", &["-t", "ed25519"]),
    ("client_rsa", &["-t", "rsa", "-b", "3072"]),
    ("client_ecdsa", &["-t", "ecdsa", "-b", "256"]),
    ("unauthorized_ed25519", &["-t", "ed25519"]),
];

/// Copies the process's client keys (made once: an RSA-3072 key takes seconds) into `dir`.
pub(super) fn make_client_keys(dir: &Path) -> anyhow::Result<ClientKeys> {
    static MADE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let source = MADE.get_or_init(|| generate_client_keys().map_err(|e| format!("{e:#}"))).clone().map_err(|e| anyhow!("making client keys: {e}"))?;
    let mut keys = HashMap::new();
    for (name, _) in CLIENT_KEYS {
        let path = dir.join(name);
        let public_key_path = path.with_extension("pub");
        fs::copy(source.join(name), &path)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
        fs::copy(source.join(name).with_extension("pub"), &public_key_path)?;
        fs::set_permissions(&public_key_path, fs::Permissions::from_mode(0o644))?;
        let (algorithm, public_key, fingerprint) = read_public_key(&public_key_path)?;
        let key =
            ClientKey { algorithm, private_key_pem: fs::read_to_string(&path)?, private_key_path: path, public_key_path, public_key, fingerprint };
        keys.insert(name, key);
    }
    let mut take = |name: &str| keys.remove(name).expect("key made above");
    Ok(ClientKeys {
        ed25519: take("client_ed25519"),
        rsa: take("client_rsa"),
        ecdsa: take("client_ecdsa"),
        unauthorized: take("unauthorized_ed25519"),
    })
}

/// Makes the client keys under `<state>/keys/<pid>` (removed by a later run once this process is gone).
pub(super) fn generate_client_keys() -> anyhow::Result<PathBuf> {
    let dir = Path::new(STATE_ROOT).join("keys").join(std::process::id().to_string());
    let _ = fs::remove_dir_all(&dir);
    create_dir(&dir, 0o700)?;
    let pending: Vec<(PathBuf, std::process::Child)> = CLIENT_KEYS
        .iter()
        .map(|(name, args)| {
            let path = dir.join(name);
            let child = Command::new("ssh-keygen")
                .args(["-q", "-N", "", "-C", &format!("capssh-e2e-{name}")])
                .args(*args)
                .arg("-f")
                .arg(&path)
                .stdin(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .context("running ssh-keygen")?;
            Ok((path, child))
        })
        .collect::<anyhow::Result<_>>()?;
    for (path, child) in pending {
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("ssh-keygen {}: {}", path.display(), String::from_utf8_lossy(&out.stderr).trim());
        }
    }
    Ok(dir)
}

pub(super) struct KeyGen {
    path: PathBuf,
    child: std::process::Child,
}

impl KeyGen {
    /// Waits for ssh-keygen; returns the public key line (no comment) and its fingerprint.
    pub(super) fn wait_public(self) -> anyhow::Result<(String, String)> {
        let out = self.child.wait_with_output()?;
        if !out.status.success() {
            bail!("ssh-keygen {}: {}", self.path.display(), String::from_utf8_lossy(&out.stderr).trim());
        }
        let (_, public, fingerprint) = read_public_key(&self.path.with_extension("pub"))?;
        Ok((public, fingerprint))
    }
}

pub(super) fn ssh_keygen_host(path: &Path, name: &str) -> anyhow::Result<KeyGen> {
    let child = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", &format!("capssh-e2e-host-{name}"), "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running ssh-keygen")?;
    Ok(KeyGen { path: path.to_path_buf(), child })
}

/// Reads an OpenSSH public key file: (type, `<type> <base64>`, `SHA256:<unpadded base64>`).
pub(super) fn read_public_key(path: &Path) -> anyhow::Result<(String, String, String)> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut fields = text.split_whitespace();
    let (Some(kind), Some(blob)) = (fields.next(), fields.next()) else {
        bail!("{} is not an OpenSSH public key", path.display());
    };
    let raw = base64::engine::general_purpose::STANDARD.decode(blob)?;
    let digest = sha2::Sha256::digest(&raw);
    let fingerprint = format!("SHA256:{}", base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest.as_slice()));
    Ok((kind.to_string(), format!("{kind} {blob}"), fingerprint))
}
