//! The one validating webhook capssh serves: template immutability.
//!
//! KubeadmControlPlane and MachineDeployments roll out when they point at a *new* template; an
//! in-place edit would do nothing and leave machines that no template describes, so edits of
//! spec.template.spec are refused. ClusterClass's topology controller must still be able to
//! send server-side-apply dry runs that change the template (it marks them with an annotation);
//! CEL cannot see whether a request is a dry run, hence a webhook.

mod handler;

pub use handler::{CLUSTER_TEMPLATE_PATH, MACHINE_TEMPLATE_PATH, router};

use serde_json::Value;

/// Annotation the topology controller puts on objects in its dry-run requests.
pub const TOPOLOGY_DRY_RUN_ANNOTATION: &str = "topology.cluster.x-k8s.io/dry-run";

/// Decides an update of an SSHMachineTemplate or SSHClusterTemplate.
/// Returns the reason for refusing it, or Ok when it may proceed.
pub fn check_template_update(kind: &str, old: &Value, new: &Value, dry_run: bool) -> Result<(), String> {
    if dry_run && has_annotation(new, TOPOLOGY_DRY_RUN_ANNOTATION) {
        return Ok(());
    }
    let spec = |obj: &Value| obj.pointer("/spec/template/spec").cloned().unwrap_or(Value::Null);
    if spec(old) != spec(new) {
        return Err(format!(
            "spec.template.spec: Forbidden: {kind} spec.template.spec is immutable; create a new \
             {kind} and point the KubeadmControlPlane or MachineDeployment at it to roll out the change"
        ));
    }
    Ok(())
}

fn has_annotation(obj: &Value, key: &str) -> bool {
    obj.pointer("/metadata/annotations").and_then(Value::as_object).is_some_and(|annotations| annotations.contains_key(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template(user_label: &str, annotations: Value) -> Value {
        json!({
            "metadata": {"name": "t", "annotations": annotations},
            "spec": {"template": {"spec": {"hostSelector": {"matchLabels": {"role": user_label}}}}}
        })
    }

    #[test]
    fn an_edit_of_the_template_spec_is_refused() {
        let old = template("worker", json!({}));
        let new = template("control-plane", json!({}));
        let err = check_template_update("SSHMachineTemplate", &old, &new, false).unwrap_err();
        assert!(err.contains("spec.template.spec is immutable"), "{err}");
    }

    #[test]
    fn metadata_only_edits_pass() {
        let old = template("worker", json!({}));
        let new = template("worker", json!({"note": "x"}));
        assert!(check_template_update("SSHMachineTemplate", &old, &new, false).is_ok());
    }

    #[test]
    fn a_topology_dry_run_passes_but_needs_both_marks() {
        let old = template("worker", json!({}));
        let marked = template("control-plane", json!({TOPOLOGY_DRY_RUN_ANNOTATION: ""}));
        assert!(check_template_update("SSHMachineTemplate", &old, &marked, true).is_ok());
        // The annotation alone (a real update) or a dry run alone is not enough.
        assert!(check_template_update("SSHMachineTemplate", &old, &marked, false).is_err());
        let unmarked = template("control-plane", json!({}));
        assert!(check_template_update("SSHMachineTemplate", &old, &unmarked, true).is_err());
    }
}
