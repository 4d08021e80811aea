//! Scrubbing secrets out of text before it reaches logs, events or conditions.
//!
//! [`redact`] knows what secrets look like: kubeadm bootstrap tokens, certificate keys, PEM
//! private keys (also a BEGIN line whose END was cut off: everything after it goes), values of
//! password/passwd/token/secret keys in YAML, JSON, `key=value` and `--flag value` form,
//! kubeconfig `client-key-data`, and `Authorization`/`Bearer` credentials. A [`Redactor`]
//! also removes exact known secrets (e.g. a job's [`crate::bootstrap::HostJob::secrets`]), and
//! each long single-word line of a multi-line secret, because logs show files line by line.

use regex::Regex;
use std::sync::LazyLock;

/// What a secret is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// Key names whose values are secret (matched as a suffix, case-insensitively:
/// `tlsBootstrapToken`, `client-secret`, `certificateKey`).
const SECRET_KEYS: &str =
    r"[\w.-]*(?:password|passwd|token|secret|certificatekey|certificate-key|certificate_key|client-key-data|private-key|privatekey)";

struct Patterns {
    pem: Regex,
    token: Regex,
    flag: Regex,
    yaml: Regex,
    json: Regex,
    assignment: Regex,
    authorization: Regex,
    bearer: Regex,
}

static PATTERNS: LazyLock<Patterns> = LazyLock::new(|| {
    let build = |pattern: &str| Regex::new(pattern).expect("redaction patterns are valid");
    Patterns {
        pem: build(r"(?s)-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\z)"),
        token: build(r"\b[a-z0-9]{6}\.[a-z0-9]{16}\b"),
        flag: build(r#"(?i)(--(?:token|discovery-token|tls-bootstrap-token|certificate-key|password)(?:=|[ \t]+))("[^"\n]*"|'[^'\n]*'|[^\s"']+)"#),
        yaml: build(&format!(r#"(?mi)^([ \t]*(?:-[ \t]+)?["']?{SECRET_KEYS}["']?[ \t]*:[ \t]+)([^ \t\r\n].*?)[ \t]*\r?$"#)),
        json: build(&format!(r#"(?i)("{SECRET_KEYS}"[ \t]*:[ \t]*)"((?:[^"\\\n]|\\.)*)""#)),
        assignment: build(&format!(r#"(?i)\b({SECRET_KEYS})=([^\s&"',;]+)"#)),
        authorization: build(r#"(?i)\b(authorization:[ \t]*(?:bearer|basic|token)[ \t]+)([^\s'"]+)"#),
        bearer: build(r"(?i)\b(bearer[ \t]+)([A-Za-z0-9._~+/=-]{16,})"),
    }
});

/// `text` with everything that looks like a secret replaced by `[REDACTED]`.
pub fn redact(text: &str) -> String {
    let p = &*PATTERNS;
    let text = p.pem.replace_all(text, REDACTED);
    let text = p.token.replace_all(&text, REDACTED);
    let text = p.flag.replace_all(&text, format!("${{1}}{REDACTED}").as_str());
    let text = p.json.replace_all(&text, format!("${{1}}\"{REDACTED}\"").as_str());
    let text = p.yaml.replace_all(&text, format!("${{1}}{REDACTED}").as_str());
    let text = p.assignment.replace_all(&text, format!("${{1}}={REDACTED}").as_str());
    let text = p.authorization.replace_all(&text, format!("${{1}}{REDACTED}").as_str());
    let text = p.bearer.replace_all(&text, format!("${{1}}{REDACTED}").as_str());
    text.into_owned()
}

/// The secret values [`redact`] would remove from `text` (at least 8 characters long, quotes
/// stripped): for a bootstrap job, these are redacted from its output even where they appear
/// without their key.
pub fn secrets_in(text: &str) -> Vec<String> {
    let p = &*PATTERNS;
    let mut found: Vec<String> = Vec::new();
    let mut add = |value: &str| {
        let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
        if value.len() >= 8 && value != REDACTED && !found.iter().any(|f| f == value) {
            found.push(value.to_string());
        }
    };
    for m in p.pem.find_iter(text).chain(p.token.find_iter(text)) {
        add(m.as_str());
    }
    for pattern in [&p.flag, &p.json, &p.yaml, &p.assignment, &p.authorization, &p.bearer] {
        for captures in pattern.captures_iter(text) {
            if let Some(value) = captures.get(2) {
                add(value.as_str());
            }
        }
    }
    found
}

/// Redacts exact known secrets, then everything [`redact`] knows. (Its `Debug` shows how many
/// secrets it knows, not them.)
#[derive(Clone, Default)]
pub struct Redactor {
    /// Longest first, so that a secret containing another is removed whole.
    secrets: Vec<String>,
}

/// Shorter known secrets are not redacted by exact match: they would match ordinary words.
const MIN_SECRET_LEN: usize = 6;
/// Lines of a multi-line secret are redacted on their own when longer than this and free of
/// whitespace (key material, not prose or YAML keys).
const MIN_LINE_LEN: usize = 16;

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor {{ {} secrets }}", self.secrets.len())
    }
}

impl Redactor {
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        let mut all: Vec<String> = Vec::new();
        for secret in secrets {
            for line in secret.lines().map(str::trim) {
                if line.len() > MIN_LINE_LEN && !line.contains(char::is_whitespace) && !line.starts_with("-----") {
                    all.push(line.to_string());
                }
            }
            if secret.trim().len() >= MIN_SECRET_LEN {
                all.push(secret.trim().to_string());
            }
        }
        all.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        all.dedup();
        Redactor { secrets: all }
    }

    pub fn redact(&self, text: &str) -> String {
        let mut text = text.to_string();
        for secret in &self.secrets {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), REDACTED);
            }
        }
        redact(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\nVTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\n-----END RSA PRIVATE KEY-----\n";

    #[test]
    fn bootstrap_tokens() {
        assert_eq!(redact("kubeadm join --token abcdef.0123456789abcdef x"), "kubeadm join --token [REDACTED] x");
        assert_eq!(redact("using abcdef.0123456789abcdef now"), "using [REDACTED] now");
        assert_eq!(redact("example.com and v1.14.2 stay"), "example.com and v1.14.2 stay");
    }

    #[test]
    fn certificate_keys() {
        let hex = "e6a2eb8581237ab72a4f494f30285ec12a9694d750b9785706a83bfcbbbd2204";
        assert_eq!(
            redact(&format!("kubeadm init --upload-certs --certificate-key {hex}")),
            "kubeadm init --upload-certs --certificate-key [REDACTED]"
        );
        assert_eq!(redact(&format!("--certificate-key={hex} --v 5")), "--certificate-key=[REDACTED] --v 5");
        assert_eq!(redact(&format!("controlPlane:\n  certificateKey: {hex}\n")), "controlPlane:\n  certificateKey: [REDACTED]\n");
        assert_eq!(redact(&format!("{{\"certificateKey\":\"{hex}\"}}")), "{\"certificateKey\":\"[REDACTED]\"}");
    }

    #[test]
    fn pem_private_keys() {
        assert_eq!(redact(&format!("before\n{KEY}after")), "before\n[REDACTED]\nafter");
        assert_eq!(redact("x -----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n(log cut"), "x [REDACTED]");
        assert_eq!(redact("-----BEGIN EC PRIVATE KEY-----\\nMHcCAQEE\\n-----END EC PRIVATE KEY-----"), "[REDACTED]");
        let cert = "-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----";
        assert_eq!(redact(cert), cert);
    }

    #[test]
    fn passwords_and_tokens_by_key() {
        assert_eq!(redact("passwd: $6$rounds=4096$abc$def"), "passwd: [REDACTED]");
        assert_eq!(redact("  - password: hunter2hunter2"), "  - password: [REDACTED]");
        assert_eq!(redact("mysql --user=a password=s3cret ok"), "mysql --user=a password=[REDACTED] ok");
        assert_eq!(
            redact("users:\n- name: kubernetes-admin\n  user:\n    token: eyJhbGciOiJSUzI1NiJ9.x.y\n"),
            "users:\n- name: kubernetes-admin\n  user:\n    token: [REDACTED]\n"
        );
        assert_eq!(redact("    client-key-data: LS0tLS1CRUdJTiBSU0Eg\n"), "    client-key-data: [REDACTED]\n");
        assert_eq!(redact("tlsBootstrapToken: \"q8k3vx.x8f3kd9s0a2m1n4b\""), "tlsBootstrapToken: [REDACTED]");
        assert_eq!(redact("curl -H 'Authorization: Bearer abcdefghijklmnop' x"), "curl -H 'Authorization: Bearer [REDACTED]' x");
        assert_eq!(redact("Authorization: Basic dXNlcjpwYXNzd29yZA=="), "Authorization: Basic [REDACTED]");
        assert_eq!(redact("got Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6IiJ9"), "got Bearer [REDACTED]");
        assert_eq!(redact("basic authentication with a bearer token"), "basic authentication with a bearer token");
        // Ordinary text stays.
        let plain = "[capssh] runcmd 2/5 exited with status 1\nkubeadm join --config /run/kubeadm/kubeadm-join-config.yaml\ndiscovery-token-ca-cert-hash: sha256:abc";
        assert_eq!(redact(plain), plain);
    }

    #[test]
    fn secrets_in_finds_values() {
        let text = format!("token: abcdef.0123456789abcdef\npasswd: $6$salt$hash\ncertificateKey: \"0123456789abcdef\"\n{KEY}");
        let found = secrets_in(&text);
        assert!(found.contains(&"abcdef.0123456789abcdef".to_string()), "{found:?}");
        assert!(found.contains(&"$6$salt$hash".to_string()), "{found:?}");
        assert!(found.contains(&"0123456789abcdef".to_string()), "{found:?}");
        assert!(found.iter().any(|f| f.starts_with("-----BEGIN RSA PRIVATE KEY-----")), "{found:?}");
        assert!(secrets_in("token: short\nname: x").is_empty());
    }

    #[test]
    fn redactor_removes_known_secrets_and_their_lines() {
        let redactor = Redactor::new(vec![KEY.to_string(), "hunter2-hunter2".to_string(), "ab".to_string()]);
        // A log showing the key's body lines without its BEGIN line.
        let log = "line: VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\nthe password is hunter2-hunter2\nab stays";
        assert_eq!(redactor.redact(log), "line: [REDACTED]\nthe password is [REDACTED]\nab stays");
        assert_eq!(redactor.redact(&format!("cat:\n{KEY}")), "cat:\n[REDACTED]\n");
        assert_eq!(Redactor::default().redact("abcdef.0123456789abcdef"), "[REDACTED]");
        assert!(!format!("{redactor:?}").contains("hunter2"));
    }
}
