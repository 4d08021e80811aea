//! The SSHMachine controller against a real kube-apiserver and real sshd hosts; the test plays
//! Cluster API (Cluster, Machine, bootstrap Secret).

use capssh::api::v1alpha1::{ConditionStatus, HostPhase, MachineAddressType, SSHHost, SSHMachine};
use capssh_e2e::capi::{install_capssh_crds, install_crds};
use capssh_e2e::hosts::HostFarm;
use capssh_e2e::manager::{eventually, http_get, start_manager_with_metrics};
use capssh_e2e::mgmt::ManagementPlane;
use capssh_e2e::scenario;
use kube::api::{Api, DeleteParams};
use serde_json::json;

const NS: &str = "machines";

const BOOTSTRAP: &str = r#"## template: jinja
#cloud-config
write_files:
-   path: /etc/kubernetes/capssh-proof
    content: "provider-id={{ ds.meta_data.provider_id }}\n"
runcmd:
  - echo ran >> /var/lib/capssh/bootstrap-count
  - mkdir -p /run/cluster-api && echo success > /run/cluster-api/bootstrap-success.complete
"#;

/// (count, sum) of a histogram's series for `kind` in a /metrics body.
fn histogram(body: &str, name: &str, kind: &str) -> Option<(f64, f64)> {
    let value = |suffix: &str| {
        let series = format!("{name}_{suffix}{{kind=\"{kind}\"}} ");
        body.lines().find_map(|line| line.strip_prefix(&series)?.trim().parse::<f64>().ok())
    };
    Some((value("count")?, value("sum")?))
}

fn host_index(farm: &HostFarm, name: &str) -> usize {
    farm.hosts.iter().position(|h| h.name == name).expect("a farm host")
}

#[tokio::test]
async fn a_machine_is_provisioned_on_a_real_host_then_reset_and_released() {
    let farm = HostFarm::start("machine-controller", 2).unwrap();
    let plane = ManagementPlane::start("machine-controller").await.unwrap();
    let client = plane.client().await.unwrap();
    install_crds(&client).await.unwrap();
    install_capssh_crds(&client).await.unwrap();
    scenario::namespace(&client, NS).await.unwrap();
    scenario::register_farm(&client, NS, &farm, json!({"role": "worker"})).await.unwrap();
    let (_manager, metrics_port) = start_manager_with_metrics(&plane, "capssh", &["--probe-interval-seconds", "2"]).unwrap();
    scenario::provisioned_cluster(&client, NS, "c1").await.unwrap();
    scenario::machine(&client, NS, "c1", "m1", BOOTSTRAP).await.unwrap();

    let machines: Api<SSHMachine> = Api::namespaced(client.clone(), NS);
    let hosts: Api<SSHHost> = Api::namespaced(client.clone(), NS);
    let machine = eventually(120, "the SSHMachine to be provisioned", || async {
        let m = machines.get("m1").await.ok()?;
        (m.status.as_ref()?.initialization.as_ref()?.provisioned == Some(true)).then_some(m)
    })
    .await
    .unwrap_or_else(|err| panic!("{err}; the conditions and the manager log are in {}", plane.dir.display()));

    // The contract fields.
    let host_name = machine.spec.host_ref.as_ref().unwrap().name.clone();
    let provider_id = format!("ssh://{NS}/{host_name}");
    assert_eq!(machine.spec.provider_id.as_deref(), Some(provider_id.as_str()));
    let status = machine.status.unwrap();
    let index = host_index(&farm, &host_name);
    assert!(status.addresses.iter().any(|a| a.r#type == MachineAddressType::InternalIP && a.address == farm.hosts[index].address.to_string()));
    for kind in ["Ready", "HostClaimed", "HostConnected", "BootstrapSucceeded"] {
        let c = status.conditions.iter().find(|c| c.r#type == kind).unwrap_or_else(|| panic!("no {kind} condition"));
        assert_eq!(c.status, ConditionStatus::True, "{kind}: {}", c.message);
    }
    // The cloud-config really ran there, once, with the jinja rendered.
    assert_eq!(farm.exec_ok(index, "cat /etc/kubernetes/capssh-proof").unwrap(), format!("provider-id={provider_id}\n"));
    assert_eq!(farm.exec_ok(index, "cat /var/lib/capssh/bootstrap-count").unwrap(), "ran\n");
    let host = hosts.get(&host_name).await.unwrap();
    assert_eq!(host.spec.consumer_ref.as_ref().map(|c| c.name.as_str()), Some("m1"));
    assert_eq!(host.status.and_then(|s| s.phase), Some(HostPhase::Provisioned));

    // The manager's metrics tell the same story.
    let metrics = eventually(30, "metrics with the provisioned host", || async {
        let body = http_get(metrics_port, "/metrics").ok()?;
        body.contains("capssh_hosts{phase=\"Provisioned\"} 1").then_some(body)
    })
    .await
    .unwrap();
    assert!(metrics.contains("capssh_provisioning_duration_seconds_count 1"), "{metrics}");
    assert!(metrics.contains("capssh_reconciles_total{kind=\"SSHMachine\",result=\"ok\"}"), "{metrics}");
    assert!(metrics.contains("capssh_reconcile_duration_seconds_bucket{le="), "{metrics}");
    // Every reconcile also reports its time outside SSH, which the commands on the host made
    // shorter than the whole.
    let (outside, total) = eventually(30, "both reconcile histograms to count the same reconciles", || async {
        let body = http_get(metrics_port, "/metrics").ok()?;
        let outside = histogram(&body, "capssh_reconcile_outside_ssh_duration_seconds", "SSHMachine")?;
        let total = histogram(&body, "capssh_reconcile_duration_seconds", "SSHMachine")?;
        (outside.0 == total.0).then_some((outside, total))
    })
    .await
    .unwrap();
    assert!(total.0 > 0.0, "{total:?}");
    assert!(outside.1 < total.1, "time outside SSH {outside:?} is not less than the whole {total:?}");

    // Delete: the cleanup runs, the host is verified clean and returned to the pool.
    machines.delete("m1", &DeleteParams::default()).await.unwrap();
    eventually(120, "the SSHMachine to be gone", || async { machines.get_opt("m1").await.ok()?.is_none().then_some(()) }).await.unwrap();
    let released = eventually(60, "the host to be Available again", || async {
        let h = hosts.get(&host_name).await.ok()?;
        (h.spec.consumer_ref.is_none() && h.status.as_ref()?.phase == Some(HostPhase::Available)).then_some(h)
    })
    .await
    .unwrap();
    assert!(released.metadata.annotations.unwrap_or_default().is_empty(), "released, not quarantined");
    let leftovers = farm.exec(index, "ls /etc/kubernetes; ls /run/cluster-api 2>/dev/null").unwrap();
    assert!(leftovers.stdout.is_empty(), "the host is clean: {}", String::from_utf8_lossy(&leftovers.stdout));
}
