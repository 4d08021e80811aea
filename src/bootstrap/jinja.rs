//! The part of Jinja that CABPK templates use: `{{ ds.meta_data.X }}` and `{{ v1.X }}`.
//! Everything else Jinja would interpret (`{% … %}`, `{# … #}`, filters, other variables,
//! whitespace control) is refused by name: a wrong or empty value in a kubeadm config is worse
//! than no bootstrap at all.

use super::{BootstrapError, MachineMetadata, shown};

/// Renders a document (without its `## template: jinja` line). Text outside `{{ }}` is kept
/// byte for byte, as cloud-init keeps it (it also keeps the trailing newline).
pub(super) fn render(text: &str, meta: &MachineMetadata) -> Result<String, BootstrapError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    // The header line counts as line 1 of the bootstrap data.
    let mut line = 2;
    while let Some(open) = find_open(rest) {
        out.push_str(&rest[..open]);
        line += rest[..open].matches('\n').count();
        let after = &rest[open..];
        match &after[..2] {
            "{{" => {
                let Some(close) = after.find("}}") else {
                    return Err(unsupported(after, line));
                };
                let expression = &after[2..close];
                out.push_str(lookup(expression, meta, line)?);
                line += expression.matches('\n').count();
                rest = &after[close + 2..];
            }
            _ => return Err(unsupported(after, line)),
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The next `{{`, `{%` or `{#`.
fn find_open(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    (0..bytes.len().saturating_sub(1)).find(|&i| bytes[i] == b'{' && matches!(bytes[i + 1], b'{' | b'%' | b'#'))
}

fn lookup<'m>(expression: &str, meta: &'m MachineMetadata, line: usize) -> Result<&'m str, BootstrapError> {
    let name = expression.trim_matches(|c: char| c == ' ' || c == '\t');
    if name.starts_with('-') || name.ends_with('-') || name.starts_with('+') {
        return Err(BootstrapError::UnsupportedTemplate { construct: format!("{{{{{}}}}}", shown(expression)), line });
    }
    let key = name.strip_prefix("ds.meta_data.").or_else(|| name.strip_prefix("v1."));
    let Some(key) = key.filter(|key| is_identifier(key)) else {
        if is_dotted_identifier(name) {
            return Err(unknown(name, meta, line));
        }
        return Err(BootstrapError::UnsupportedTemplate { construct: format!("{{{{{}}}}}", shown(expression)), line });
    };
    meta.values.get(key).map(String::as_str).ok_or_else(|| unknown(name, meta, line))
}

fn unknown(name: &str, meta: &MachineMetadata, line: usize) -> BootstrapError {
    let known: Vec<&str> = meta.values.keys().map(String::as_str).collect();
    BootstrapError::UnknownTemplateVariable { name: shown(name), line, known: if known.is_empty() { "(none)".to_string() } else { known.join(", ") } }
}

fn unsupported(at: &str, line: usize) -> BootstrapError {
    let end = match &at[..2] {
        "{%" => at.find("%}").map(|i| i + 2),
        "{#" => at.find("#}").map(|i| i + 2),
        _ => None,
    };
    let construct = match end {
        Some(end) => shown(&at[..end]),
        None => format!("{} without its closing {}", &at[..2], closing(&at[..2])),
    };
    BootstrapError::UnsupportedTemplate { construct, line }
}

fn closing(open: &str) -> &'static str {
    match open {
        "{%" => "%}",
        "{#" => "#}",
        _ => "}}",
    }
}

fn is_identifier(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_dotted_identifier(text: &str) -> bool {
    text.split('.').all(is_identifier)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> MachineMetadata {
        let mut meta = MachineMetadata::default();
        for (k, v) in [("local_hostname", "node-1"), ("provider_id", "ssh://default/host-1"), ("instance_id", "host-1")] {
            meta.values.insert(k.into(), v.into());
        }
        meta
    }

    #[test]
    fn renders_both_namespaces_with_or_without_spaces() {
        let text = "name: {{ ds.meta_data.local_hostname }}\nid: {{v1.instance_id}}\np: '{{ ds.meta_data.provider_id }}'\n";
        assert_eq!(render(text, &meta()).unwrap(), "name: node-1\nid: host-1\np: 'ssh://default/host-1'\n");
    }

    #[test]
    fn keeps_text_without_templates() {
        let text = "a: {b: c}\n  } { x\n";
        assert_eq!(render(text, &meta()).unwrap(), text);
    }

    #[test]
    fn unknown_variables_are_errors_naming_them() {
        let err = render("a\nb: {{ ds.meta_data.region }}\n", &meta()).unwrap_err();
        match &err {
            BootstrapError::UnknownTemplateVariable { name, line, .. } => {
                assert_eq!(name, "ds.meta_data.region");
                assert_eq!(*line, 3);
            }
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains("local_hostname"), "{err}");
        assert!(matches!(render("{{ local_hostname }}", &meta()), Err(BootstrapError::UnknownTemplateVariable { .. })));
        assert!(matches!(render("{{ ds.meta_data.a.b }}", &meta()), Err(BootstrapError::UnknownTemplateVariable { .. })));
    }

    #[test]
    fn other_constructs_are_refused() {
        for text in [
            "{% if x %}a{% endif %}",
            "{# comment #}",
            "{{ v1.local_hostname | upper }}",
            "{{- v1.local_hostname }}",
            "{{ v1.local_hostname",
            "{{ 'literal' }}",
            "{%",
        ] {
            match render(text, &meta()) {
                Err(BootstrapError::UnsupportedTemplate { construct, .. }) => assert!(!construct.is_empty()),
                other => panic!("{text}: {other:?}"),
            }
        }
        let err = render("x\n{% for a in b %}", &meta()).unwrap_err();
        assert!(err.to_string().contains("{% for a in b %}") && err.to_string().contains("line 3"), "{err}");
    }
}
