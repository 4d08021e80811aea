//! config/rbac must grant the manager exactly what its code calls, rule by rule: a grant
//! nothing uses is a permission an attacker of the manager gets for free, and a missing one
//! fails only in a real cluster. When the code starts using a new verb, add it here and there.
//! (e2e/tests/host_controller.rs runs the manager under these roles against a real API server.)

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role};
use std::collections::BTreeMap;
use std::path::Path;

type Grants = BTreeMap<(String, String), Vec<String>>;

fn grants(rules: Vec<PolicyRule>) -> Grants {
    let mut all = Grants::new();
    for rule in rules {
        for group in rule.api_groups.clone().unwrap_or_default() {
            for resource in rule.resources.clone().unwrap_or_default() {
                let verbs = all.entry((group.clone(), resource)).or_default();
                verbs.extend(rule.verbs.iter().cloned());
                verbs.sort();
                verbs.dedup();
            }
        }
    }
    all
}

fn read(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/rbac").join(name)).unwrap()
}

fn expected(table: &[(&str, &str, &[&str])]) -> Grants {
    table.iter().map(|(g, r, v)| ((g.to_string(), r.to_string()), v.iter().map(|v| v.to_string()).collect())).collect()
}

#[test]
fn the_manager_role_grants_exactly_what_the_code_uses() {
    let role: ClusterRole = serde_saphyr::from_str(&read("role.yaml")).unwrap();
    let infra = "infrastructure.cluster.x-k8s.io";
    let want = expected(&[
        // watch/list: controllers and caches; get: by name; update: claim and release
        // (hosts::claim, replace with resourceVersion); patch: key pin, quarantine, finalizer.
        (infra, "sshhosts", &["get", "list", "patch", "update", "watch"]),
        // patch: hostRef/providerID after a claim, and the finalizer.
        (infra, "sshmachines", &["get", "list", "patch", "watch"]),
        (infra, "sshclusters", &["get", "list", "watch"]),
        // Status only through server-side apply (controllers::apply_status).
        (infra, "sshclusters/status", &["patch"]),
        (infra, "sshhosts/status", &["patch"]),
        (infra, "sshmachines/status", &["patch"]),
        ("cluster.x-k8s.io", "clusters", &["get", "list", "watch"]),
        ("cluster.x-k8s.io", "machines", &["get", "list", "watch"]),
        // Bootstrap data and credentials: label-selected watch caches, by name on a miss; the
        // move label on credentials.
        ("", "secrets", &["get", "list", "patch", "watch"]),
        // A registry mirror's CA from a ConfigMap (spec.preparation.registry.caRef), by name.
        ("", "configmaps", &["get"]),
        // kube-runtime's event recorder: create, and patch a repeated event.
        ("events.k8s.io", "events", &["create", "patch"]),
    ]);
    assert_eq!(grants(role.rules.unwrap_or_default()), want);
}

#[test]
fn the_leader_election_role_grants_exactly_what_the_election_does() {
    let role: Role = serde_saphyr::from_str(&read("leader_election_role.yaml")).unwrap();
    // manager::leader: get the Lease, create it when missing, replace it to renew or take over.
    let want = expected(&[("coordination.k8s.io", "leases", &["create", "get", "update"])]);
    assert_eq!(grants(role.rules.unwrap_or_default()), want);
}
