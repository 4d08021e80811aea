//! Conditions in the metav1 shape: one place that sets them, so lastTransitionTime only moves
//! when the status does, and every message is redacted before it is stored.

use crate::api::v1alpha1::{Condition, ConditionStatus};

/// The longest condition message stored (the CRD allows 32768 characters; a status the API
/// server refuses would leave the machine without any condition at all).
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;

/// `text` cut to at most `max` bytes on a character boundary, saying so when it was cut.
pub fn bounded(text: &str, max: usize) -> String {
    const CUT: &str = " … (truncated)";
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max.saturating_sub(CUT.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{CUT}", &text[..end])
}

/// Sets (or replaces) the condition of type `kind`.
pub fn set(conditions: &mut Vec<Condition>, kind: &str, status: ConditionStatus, reason: &str, message: &str, generation: Option<i64>) {
    let message = bounded(&crate::redact::redact(message), MAX_MESSAGE_BYTES);
    let now = now();
    match conditions.iter_mut().find(|c| c.r#type == kind) {
        Some(existing) => {
            if existing.status != status {
                existing.last_transition_time = now;
            }
            existing.status = status;
            existing.reason = reason.to_string();
            existing.message = message;
            existing.observed_generation = generation;
        }
        None => conditions.push(Condition {
            r#type: kind.to_string(),
            status,
            observed_generation: generation,
            last_transition_time: now,
            reason: reason.to_string(),
            message,
        }),
    }
}

/// Sets Ready True with no message. Cluster API mirrors our Ready into the Machine's and the
/// Cluster's InfrastructureReady and summarises those into Ready and Available, where any
/// message reads as something to look at (its own e2e framework requires them empty).
pub fn set_ready(conditions: &mut Vec<Condition>, reason: &str, generation: Option<i64>) {
    set(conditions, crate::api::v1alpha1::conditions::types::READY, ConditionStatus::True, reason, "", generation);
}

/// Now, in the RFC 3339 seconds precision of metav1.Time.
pub fn now() -> String {
    timestamp(jiff::Timestamp::now())
}

/// `at` as status timestamps are written: RFC 3339, whole seconds.
pub fn timestamp(at: jiff::Timestamp) -> String {
    at.round(jiff::Unit::Second).unwrap_or(at).to_string()
}

pub fn get<'a>(conditions: &'a [Condition], kind: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.r#type == kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::v1alpha1::conditions::types::READY;

    #[test]
    fn transition_time_moves_only_with_the_status() {
        let mut conditions = Vec::new();
        set(&mut conditions, READY, ConditionStatus::False, "Waiting", "a", Some(1));
        conditions[0].last_transition_time = "2020-01-01T00:00:00Z".into();
        set(&mut conditions, READY, ConditionStatus::False, "StillWaiting", "b", Some(2));
        assert_eq!(conditions[0].last_transition_time, "2020-01-01T00:00:00Z");
        assert_eq!(conditions[0].reason, "StillWaiting");
        set(&mut conditions, READY, ConditionStatus::True, "Ready", "", Some(2));
        assert_ne!(conditions[0].last_transition_time, "2020-01-01T00:00:00Z");
        assert_eq!(conditions.len(), 1);
    }

    #[test]
    fn messages_are_bounded_in_bytes_on_a_character_boundary() {
        let mut conditions = Vec::new();
        let long = "é".repeat(MAX_MESSAGE_BYTES);
        set(&mut conditions, READY, ConditionStatus::False, "Failed", &long, None);
        assert!(conditions[0].message.len() <= MAX_MESSAGE_BYTES);
        assert!(conditions[0].message.ends_with("(truncated)"));
        assert_eq!(bounded("short", 10), "short");
    }

    #[test]
    fn messages_are_redacted() {
        let mut conditions = Vec::new();
        set(&mut conditions, READY, ConditionStatus::False, "Failed", "kubeadm join --token abcdef.0123456789abcdef", None);
        assert!(!conditions[0].message.contains("0123456789abcdef"));
    }
}
