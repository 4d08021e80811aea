//! Scrubbing secrets out of text before it reaches logs, events or conditions.
//!
//! [`redact`] knows what secrets look like: kubeadm bootstrap tokens, certificate keys, PEM
//! private keys (also a BEGIN line whose END was cut off: everything after it goes; and a body
//! whose BEGIN was cut off: the base64 lines before its END go), values of
//! password/passwd/token/secret/API-key keys in YAML, JSON, TOML, `key=value` (environment
//! variables such as `AWS_SECRET_ACCESS_KEY`) and `--flag value` form, docker and containerd
//! registry `auth` values, kubeconfig `client-key-data`, passwords in URLs
//! (`https://user:[REDACTED]@host`), and `Authorization`/`Bearer` credentials. A [`Redactor`]
//! also removes exact known secrets (e.g. a job's [`crate::bootstrap::HostJob::secrets`]), and
//! each long single-word line of a multi-line secret, because logs show files line by line.

use regex::{Captures, Regex};
use std::sync::LazyLock;

/// What a secret is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// Key names whose values are secret (matched as a suffix, case-insensitively:
/// `tlsBootstrapToken`, `client-secret`, `certificateKey`, `AWS_SECRET_ACCESS_KEY`).
const SECRET_KEYS: &str = r"[\w.-]*(?:password|passwd|token|secret|secret[_-]?(?:access[_-]?)?key|api[_-]?key|certificatekey|certificate-key|certificate_key|client-key-data|private[_-]?key)";

/// Also secret as a whole key in JSON and TOML: docker's config.json and containerd's registry
/// configuration keep base64 `user:password` under `auth`. (Not as a suffix: `oauth`.)
const AUTH_KEY: &str = "auth";

struct Patterns {
    pem: Regex,
    pem_tail: Regex,
    token: Regex,
    flag: Regex,
    yaml: Regex,
    json: Regex,
    toml: Regex,
    assignment: Regex,
    url: Regex,
    authorization: Regex,
    bearer: Regex,
}

static PATTERNS: LazyLock<Patterns> = LazyLock::new(|| {
    let build = |pattern: &str| Regex::new(pattern).expect("redaction patterns are valid");
    Patterns {
        pem: build(r"(?s)-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\z)"),
        // A log tail that starts inside a key: the base64 lines (newlines real or escaped) that end in its END line.
        pem_tail: build(r"(?:[A-Za-z0-9+/=]+[ \t]*(?:\r?\n|\\n)[ \t]*)+-----END [A-Z0-9 ]*PRIVATE KEY-----"),
        token: build(r"\b[a-z0-9]{6}\.[a-z0-9]{16}\b"),
        flag: build(r#"(?i)(--(?:token|discovery-token|tls-bootstrap-token|certificate-key|password)(?:=|[ \t]+))("[^"\n]*"|'[^'\n]*'|[^\s"']+)"#),
        yaml: build(&format!(r#"(?mi)^([ \t]*(?:-[ \t]+)?["']?{SECRET_KEYS}["']?[ \t]*:[ \t]+)([^ \t\r\n].*?)[ \t]*\r?$"#)),
        json: build(&format!(r#"(?i)("(?:{SECRET_KEYS}|{AUTH_KEY})"[ \t]*:[ \t]*)"((?:[^"\\\n]|\\.)*)""#)),
        toml: build(&format!(r#"(?mi)^([ \t]*["']?(?:{SECRET_KEYS}|{AUTH_KEY})["']?[ \t]*=[ \t]*)("(?:[^"\\\n]|\\.)*"|'[^'\n]*'|[^\s#]+)"#)),
        assignment: build(&format!(r#"(?i)\b({SECRET_KEYS}=)("[^"\n]*"|'[^'\n]*'|[^\s&"',;]+)"#)),
        // scheme://user:password@host: the user stays. A password runs to the last `@` before the path.
        url: build(r#"(?i)\b([a-z][a-z0-9+.-]*://[^\s:/@"'<>]+:)([^\s/"'<>]+)@"#),
        authorization: build(r#"(?i)\b(authorization:[ \t]*(?:bearer|basic|token)[ \t]+)([^\s'"]+)"#),
        bearer: build(r"(?i)\b(bearer[ \t]+)([A-Za-z0-9._~+/=-]{16,})"),
    }
});

/// `prefix` then the value redacted, keeping the value's quotes (so that TOML, JSON and shell
/// stay well-formed).
fn keep_quotes(captures: &Captures) -> String {
    let value = &captures[2];
    let quote = value.chars().next().filter(|c| *c == '"' || *c == '\'').map(String::from).unwrap_or_default();
    format!("{}{quote}{REDACTED}{quote}", &captures[1])
}

/// `text` with everything that looks like a secret replaced by `[REDACTED]`.
pub fn redact(text: &str) -> String {
    let p = &*PATTERNS;
    let text = p.pem.replace_all(text, REDACTED);
    let text = p.pem_tail.replace_all(&text, REDACTED);
    let text = p.token.replace_all(&text, REDACTED);
    let text = p.flag.replace_all(&text, format!("${{1}}{REDACTED}").as_str());
    let text = p.json.replace_all(&text, format!("${{1}}\"{REDACTED}\"").as_str());
    let text = p.yaml.replace_all(&text, format!("${{1}}{REDACTED}").as_str());
    let text = p.toml.replace_all(&text, keep_quotes);
    let text = p.assignment.replace_all(&text, keep_quotes);
    let text = p.url.replace_all(&text, format!("${{1}}{REDACTED}@").as_str());
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
    for m in p.pem.find_iter(text).chain(p.pem_tail.find_iter(text)).chain(p.token.find_iter(text)) {
        add(m.as_str());
    }
    for pattern in [&p.flag, &p.json, &p.yaml, &p.toml, &p.assignment, &p.url, &p.authorization, &p.bearer] {
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
    fn toml_and_registry_auth() {
        let containerd = "[plugins.\"io.containerd.grpc.v1.cri\".registry.configs.\"r.example\".auth]\n  username = \"bob\"\n  password = \"hunter2hunter2\"\n  auth = 'Ym9iOmh1bnRlcjI='\n  identitytoken = \"eyJ0b2tlbiI6MX0\"\n";
        assert_eq!(
            redact(containerd),
            "[plugins.\"io.containerd.grpc.v1.cri\".registry.configs.\"r.example\".auth]\n  username = \"bob\"\n  password = \"[REDACTED]\"\n  auth = '[REDACTED]'\n  identitytoken = \"[REDACTED]\"\n"
        );
        assert_eq!(redact("api_key = abc123def # note"), "api_key = [REDACTED] # note");
        let docker = r#"{"auths":{"registry.example":{"auth":"Ym9iOmh1bnRlcjI="},"other":{"auth": "b3RoZXI6cGFzcw=="}}}"#;
        assert_eq!(redact(docker), r#"{"auths":{"registry.example":{"auth":"[REDACTED]"},"other":{"auth": "[REDACTED]"}}}"#);
        assert_eq!(
            redact("{\n  \"auths\": {\n    \"r\": {\n      \"auth\": \"Ym9iOmh1bnRlcjI=\"\n"),
            "{\n  \"auths\": {\n    \"r\": {\n      \"auth\": \"[REDACTED]\"\n"
        );
    }

    #[test]
    fn environment_assignments() {
        assert_eq!(
            redact("export AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\nAWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE\n"),
            "export AWS_SECRET_ACCESS_KEY=[REDACTED]\nAWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE\n"
        );
        assert_eq!(redact("GITHUB_TOKEN=\"ghp_abc123\" DB_PASSWORD='p a ss' make"), "GITHUB_TOKEN=\"[REDACTED]\" DB_PASSWORD='[REDACTED]' make");
        assert_eq!(redact("Environment=\"REGISTRY_PASSWORD=s3cr3t\"\n"), "Environment=\"REGISTRY_PASSWORD=[REDACTED]\"\n");
        assert_eq!(redact("STRIPE_API_KEY=sk_live_abc CLIENT_SECRET=xyz"), "STRIPE_API_KEY=[REDACTED] CLIENT_SECRET=[REDACTED]");
    }

    #[test]
    fn passwords_in_urls() {
        assert_eq!(redact("pulling https://bob:hunter2@registry.example/v2/"), "pulling https://bob:[REDACTED]@registry.example/v2/");
        assert_eq!(
            redact("git clone https://x-access-token:ghs_abc@github.com/o/r.git"),
            "git clone https://x-access-token:[REDACTED]@github.com/o/r.git"
        );
        // An unescaped `@` in the password: up to the last one before the host.
        assert_eq!(redact("HTTPS_PROXY=http://proxy-user:p@ss@proxy.example:3128"), "HTTPS_PROXY=http://proxy-user:[REDACTED]@proxy.example:3128");
        assert_eq!(redact("\"postgres://app:pw%40x@db:5432/app\""), "\"postgres://app:[REDACTED]@db:5432/app\"");
    }

    #[test]
    fn pem_bodies_without_their_begin_line() {
        let tail = "VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\nAbCdEfGh==\n-----END RSA PRIVATE KEY-----\n[capssh] runcmd 2/3 exited with status 0\n";
        assert_eq!(redact(tail), "[REDACTED]\n[capssh] runcmd 2/3 exited with status 0\n");
        // Cut inside a line, and indented as in a YAML block.
        assert_eq!(redact("...IzW7yWR7QkrmBL7jTKEn5u+qK\n      Zkp18gnTxK\n      -----END OPENSSH PRIVATE KEY-----\n"), "...[REDACTED]\n");
        // JSON-escaped newlines, as in a structured log.
        assert_eq!(
            redact(
                r#"{"msg":"MHcCAQEEIIrYSSNQFaA2Hwf1duRSxKtLYX5CB04fSeQ6tF1aY
-----END EC PRIVATE KEY-----
"}"#
            ),
            r#"{"msg":"[REDACTED]
"}"#
        );
    }

    #[test]
    fn ordinary_text_stays() {
        for plain in [
            "https://registry.example:5000/v2/ and ssh://default/host-1 and root@host-1:22 and mailto:bob@example.com",
            "http://[::1]:8080/healthz",
            "token_ttl = \"24h\"\npassword_file = \"/etc/capssh/pw\"\noauth = true\n",
            "{\"oauth\": \"enabled\", \"authority\": \"x\"}",
            "kind: Secret\nsecretName: bootstrap-data\nAWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE\n",
            "kubeadm join --password-file /x --discovery-token-ca-cert-hash sha256:abc",
            "MIIC2DCCAcCgAwIBAgIBADANBgkqhkiG9w0BAQsFADAVMRMwEQYDVQQDEwprdWJl\n-----END CERTIFICATE-----\n",
            "[capssh] write_files 3/5 done\nauth: ok, proceeding\n",
        ] {
            assert_eq!(redact(plain), plain);
        }
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

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Secret values as configuration holds them: none of the characters that end a value
        /// in one of the shapes (whitespace, quotes, `@`, `/`, `#`, `&`, `,`, `;`).
        fn value() -> impl Strategy<Value = String> {
            "[A-Za-z0-9._~+=!*%-]{8,40}"
        }

        /// Each shape, with `{}` where the secret goes.
        const SHAPES: &[&str] = &[
            "kubeadm join 10.0.0.1:6443 --token {} --v 5",
            "kubeadm init --certificate-key={}",
            "kubeadm join --discovery-token '{}'",
            "password: {}",
            "  tlsBootstrapToken: \"{}\"",
            "- passwd: {}",
            "{\"password\": \"{}\", \"user\": \"bob\"}",
            "{\"auths\":{\"r.example\":{\"auth\":\"{}\"}}}",
            "  password = \"{}\"",
            "auth = '{}'",
            "AWS_SECRET_ACCESS_KEY={}",
            "export GITHUB_TOKEN=\"{}\"",
            "DB_PASSWORD={} make migrate",
            "pulling https://bob:{}@registry.example/v2/",
            "curl -H 'Authorization: Bearer {}'",
        ];

        proptest! {
            #[test]
            fn no_secret_survives_in_a_known_shape(
                secret in value(),
                shape in proptest::sample::select(SHAPES),
                before in proptest::collection::vec("[^\n]{0,30}", 0..3),
                after in proptest::collection::vec("[^\n]{0,30}", 0..3),
            ) {
                let around = format!("{}\n{}\n{}", before.join("\n"), shape.replace("{}", ""), after.join("\n"));
                prop_assume!(!around.contains(&secret) && !REDACTED.contains(&secret));
                let text = [before.join("\n"), shape.replace("{}", &secret), after.join("\n")].join("\n");
                let redacted = redact(&text);
                prop_assert!(!redacted.contains(&secret), "{text:?} became {redacted:?}");
            }

            #[test]
            fn a_known_secret_goes_wherever_it_is(secret in "[^\\[\\]]{6,60}", before in ".{0,60}", after in ".{0,60}") {
                let secret = secret.trim();
                prop_assume!(secret.len() >= MIN_SECRET_LEN && !REDACTED.contains(secret));
                let redacted = Redactor::new([secret.to_string()]).redact(&format!("{before}{secret}{after}"));
                prop_assert!(!redacted.contains(secret), "{redacted:?}");
            }
        }
    }
}
