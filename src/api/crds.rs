//! CRD manifests generated from the Rust types. `capssh crds` prints them and
//! config/crd/bases holds them; a test fails when the two differ.

use super::v1alpha1::{SSHCluster, SSHClusterTemplate, SSHHost, SSHMachine, SSHMachineTemplate, VERSION};
use super::{CONTRACT_LABEL, MOVE_LABEL};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// Every CRD capssh installs, labelled for Cluster API.
pub fn all() -> Vec<CustomResourceDefinition> {
    let mut crds = vec![SSHCluster::crd(), SSHClusterTemplate::crd(), SSHHost::crd(), SSHMachine::crd(), SSHMachineTemplate::crd()];
    for crd in &mut crds {
        // Cluster API resolves which of our versions implements its contract through this label
        // (v1beta2 references carry no apiVersion), so it is load-bearing.
        crd.metadata.labels.get_or_insert_with(Default::default).insert(CONTRACT_LABEL.to_string(), VERSION.to_string());
        if crd.spec.names.kind == "SSHHost" {
            crd.metadata.labels.get_or_insert_with(Default::default).insert(MOVE_LABEL.to_string(), String::new());
        }
    }
    crds
}

/// The file name kubebuilder-style layouts use: `<group>_<plural>.yaml`.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural)
}

/// One CRD as YAML, as written to config/crd/bases.
pub fn to_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_saphyr::SerializeError> {
    serde_saphyr::to_string(crd).map(|yaml| format!("---\n{yaml}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_crd_carries_the_contract_label_and_the_capi_naming() {
        for crd in all() {
            let labels = crd.metadata.labels.as_ref().expect("labels");
            assert_eq!(labels.get(CONTRACT_LABEL).map(String::as_str), Some(VERSION));
            // contract.CalculateCRDName: plural of the lower-case kind + "." + group.
            let expected = format!("{}s.{}", crd.spec.names.kind.to_lowercase(), crd.spec.group);
            assert_eq!(crd.metadata.name.as_deref(), Some(expected.as_str()));
            assert_eq!(crd.spec.scope, "Namespaced");
            assert!(crd.spec.versions[0].subresources.is_some() || crd.spec.names.kind.ends_with("Template"));
            // Only the pool moves by label; everything else moves through its owner chain.
            assert_eq!(labels.contains_key(MOVE_LABEL), crd.spec.names.kind == "SSHHost");
        }
    }
}
