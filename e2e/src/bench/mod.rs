//! The benchmark of issue 7: provisioning throughput and footprint of capssh against the SSH
//! floor (plain OpenSSH) and a peer (BYOH, Bring Your Own Host), side by side on one machine.
//!
//! For each size N: a farm of N sshd hosts ([`crate::hosts`]); the floor ([`floor`]) run
//! `floor_runs` times (median kept); then capssh ([`capssh_run`]) against a real API server:
//! hosts registered and probed, N Machines provisioned, all deleted and the hosts Available again;
//! then capssh again with a fresh API server and the last `blackhole_percent` of the hosts unplugged
//! once Available ([`blackhole`]); then BYOH (up to `byoh_max_size`) ([`byoh`]) on the same hosts, when its binaries are built ([`peer`]): an agent per
//! host registers it, N Machines provisioned, all deleted and the hosts free again. Every host
//! gets the same bootstrap data, [`bootstrap_data`] (a few write_files, a runcmd that sleeps 1 s):
//! capssh and the floor run the script capssh's translator makes of it, BYOH's agent runs it itself.
//! It is a benchmark: nothing here asserts a time. `make bench` runs it (the `bench` binary).

pub mod blackhole;
pub mod byoh;
pub mod capssh_run;
pub mod floor;
pub mod observe;
pub mod peer;
pub mod procfs;
pub mod report;
pub mod targets;

use crate::hosts::HostFarm;
use serde::Serialize;
use std::time::{Duration, Instant};

/// What to run.
#[derive(Clone, Debug, Serialize)]
pub struct Config {
    pub sizes: Vec<usize>,
    /// SSH concurrency: capssh's `--max-concurrent-hosts` and the floor's parallel `ssh` count.
    pub concurrency: usize,
    /// Floor repetitions per size (the median is reported; the machine is noisy).
    pub floor_runs: usize,
    /// Give up on a capssh (or BYOH) phase after this long.
    pub phase_timeout_seconds: u64,
    /// Run BYOH after capssh at each size, when its binaries are built.
    pub byoh: bool,
    /// At sizes above this BYOH does not run: its agents stay on every host (about 38 MiB each).
    pub byoh_max_size: usize,
    /// A second capssh run at each size with this percentage of the hosts unplugged once they
    /// are Available ([`blackhole`]); 0 leaves it out.
    pub blackhole_percent: usize,
    /// After provisioning, how long the clean capssh run watches the manager in steady state
    /// (health checks only, nothing created) before deleting; 0 leaves it out. The manager
    /// checks a provisioned host every 60 s, so 65 s sees every machine's check once.
    pub steady_seconds: u64,
}

impl Default for Config {
    fn default() -> Self {
        // 64 is `capssh manager --max-concurrent-hosts`'s default.
        Self {
            sizes: vec![50, 100, 200],
            concurrency: 64,
            floor_runs: 3,
            phase_timeout_seconds: 600,
            byoh: true,
            byoh_max_size: 200,
            blackhole_percent: 20,
            steady_seconds: 0,
        }
    }
}

/// The bootstrap data every host gets: constant, known host work (no kubeadm).
pub fn bootstrap_data() -> String {
    let key: String = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [7u8; 256]);
    format!(
        "#cloud-config
write_files:
  - path: /etc/kubernetes/bench/kubeadm-config.yaml
    permissions: '0644'
    content: |
      apiVersion: kubeadm.k8s.io/v1beta4
      kind: JoinConfiguration
      nodeRegistration:
        kubeletExtraArgs:
          - name: provider-id
            value: ssh://bench/host
  - path: /etc/kubernetes/bench/pki/ca.key
    permissions: '0600'
    owner: root:root
    encoding: b64
    content: {key}
  - path: /etc/kubernetes/bench/environment
    content: |
      BENCH=1
runcmd:
  - sleep 1
  - mkdir -p /run/cluster-api && echo success > /run/cluster-api/bootstrap-success.complete
"
    )
}

/// The bootstrap Secret `<name>-bootstrap` holding `data`, as Cluster API's kubeadm bootstrap
/// provider writes it (type, cluster label, `value` and `format`).
pub async fn create_bootstrap_secret(client: &kube::Client, namespace: &str, cluster: &str, name: &str, data: &str) -> anyhow::Result<()> {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("{name}-bootstrap"), "labels": {"cluster.x-k8s.io/cluster-name": cluster}},
        "type": "cluster.x-k8s.io/secret",
        "data": {"value": b64(data), "format": b64("cloud-config")}
    }))?;
    kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), namespace).create(&Default::default(), &secret).await?;
    Ok(())
}

/// The job script the floor uploads: exactly what capssh runs for [`bootstrap_data`].
pub fn job_script() -> anyhow::Result<String> {
    let plan = capssh::bootstrap::plan(bootstrap_data().as_bytes(), capssh::bootstrap::Format::CloudConfig, &Default::default())?;
    Ok(plan.script)
}

/// Everything measured at one size.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SizeResult {
    pub n: usize,
    pub farm_start_seconds: f64,
    /// Every process on the hosts right after the farm started (an idle sshd and the anchor
    /// holding its namespaces, per host): what one test host costs.
    pub hosts_idle: procfs::HostsMemory,
    /// The median floor run (by wall time) and every run.
    pub floor: floor::FloorRun,
    pub floor_runs: Vec<floor::FloorRun>,
    pub capssh: Option<capssh_run::CapsshRun>,
    /// Why capssh has no numbers at this size, if it has none.
    pub capssh_error: Option<String>,
    /// k of the blackholed run (0 when it is off or k rounds to 0), its numbers, or why none.
    pub blackholed_hosts: usize,
    pub capssh_blackholed: Option<blackhole::BlackholedRun>,
    pub capssh_blackholed_error: Option<String>,
    /// k0smotron, the peer that cannot be built here: why.
    pub peer: peer::PeerStatus,
    pub byoh: Option<byoh::ByohRun>,
    /// Why BYOH has no numbers at this size (not built, skipped, or its exact failure).
    pub byoh_error: Option<String>,
}

/// Removes what a run left on the first `n` hosts (floor files, jobs, sentinel, written files).
fn reset_hosts(farm: &HostFarm, n: usize) -> anyhow::Result<()> {
    for i in 0..n {
        farm.exec_ok(i, "rm -rf /run/cluster-api /etc/kubernetes/bench /var/lib/capssh/floor /var/lib/capssh/jobs")?;
    }
    Ok(())
}

/// Runs one size; `peers` is what [`peer::Peers::find`] found (once per benchmark).
pub async fn run_size(config: &Config, n: usize, peers: &peer::Peers) -> anyhow::Result<SizeResult> {
    let started = Instant::now();
    let farm = HostFarm::start("bench", n)?;
    let farm_start_seconds = started.elapsed().as_secs_f64();
    let hosts_idle = procfs::hosts_memory(&farm, n);
    eprintln!("bench N={n}: {}", report::host_cost(n, farm_start_seconds, &hosts_idle));
    let script = job_script()?;

    let mut floor_runs = Vec::new();
    for run in 0..config.floor_runs.max(1) {
        reset_hosts(&farm, n)?;
        let result = floor::run(&farm, n, &script, config.concurrency)?;
        eprintln!(
            "bench N={n}: floor run {}: {:.2}s, {} failures{}",
            run + 1,
            result.wall_seconds,
            result.failures,
            result.first_error.as_deref().map(|e| format!(" (first: {e})")).unwrap_or_default()
        );
        floor_runs.push(result);
    }
    let mut by_wall = floor_runs.clone();
    by_wall.sort_by(|a, b| a.wall_seconds.total_cmp(&b.wall_seconds));
    let floor = by_wall[by_wall.len() / 2].clone();

    reset_hosts(&farm, n)?;
    // 1,000 hosts' resets share two cores here: a phase may take longer than at 200.
    let timeout = Duration::from_secs(config.phase_timeout_seconds.max(n as u64 * 3 / 2));
    let (capssh, capssh_error) =
        match capssh_run::run(&farm, n, &bootstrap_data(), config.concurrency, timeout, Duration::from_secs(config.steady_seconds)).await {
            Ok(run) => {
                eprintln!(
                    "bench N={n}: capssh provisioned in {:.2}s (hosts ready {:.2}s, delete {:.2}s), manager peak RSS {:.1} MiB",
                    run.provision.wall_seconds, run.hosts_ready.wall_seconds, run.delete.wall_seconds, run.manager_end.peak_rss_mib
                );
                (Some(run), None)
            }
            Err(err) => {
                eprintln!("bench N={n}: capssh failed: {err:#}");
                (None, Some(format!("{err:#}")))
            }
        };
    let blackholed_hosts = if config.blackhole_percent > 0 { blackhole::blackholed_count(n, config.blackhole_percent) } else { 0 };
    let (capssh_blackholed, capssh_blackholed_error) = match blackholed_hosts {
        0 if config.blackhole_percent == 0 => (None, None),
        0 => (None, Some(format!("skipped: {}% of {n} hosts rounds to none", config.blackhole_percent))),
        k => {
            reset_hosts(&farm, n)?;
            match blackhole::run(&farm, n, k, &bootstrap_data(), config.concurrency, timeout).await {
                Ok(run) => {
                    eprintln!(
                        "bench N={n}: capssh with {k} hosts blackholed provisioned {} machines in {:.2}s (machine p50 {:.2}s, max {:.2}s), manager peak RSS {:.1} MiB{}",
                        run.machines,
                        run.provision.wall_seconds,
                        run.machine_p50_seconds,
                        run.machine_max_seconds,
                        run.manager_after_provision.peak_rss_mib,
                        match (&run.delete, &run.delete_error) {
                            (Some(d), _) => format!(", delete {:.2}s", d.wall_seconds),
                            (None, Some(err)) => format!(", delete failed: {err}"),
                            (None, None) => String::new(),
                        }
                    );
                    (Some(run), None)
                }
                Err(err) => {
                    eprintln!("bench N={n}: capssh with {k} hosts blackholed failed: {err:#}");
                    (None, Some(format!("{err:#}")))
                }
            }
        }
    };
    let (byoh, byoh_error) = match &peers.byoh {
        _ if !config.byoh => (None, Some("skipped (--no-byoh)".to_string())),
        _ if n > config.byoh_max_size => (None, Some(byoh_skipped_above(config.byoh_max_size))),
        Err(why) => (None, Some(why.clone())),
        Ok((manager, agent)) => {
            reset_hosts(&farm, n)?;
            match byoh::run(&farm, n, &bootstrap_data(), timeout, manager, agent).await {
                Ok(run) => {
                    eprintln!(
                        "bench N={n}: BYOH provisioned in {:.2}s (registered {:.2}s, delete {:.2}s), manager peak RSS {:.1} MiB, agents {:.1} MiB RSS in all, pairing violations {}",
                        run.provision.wall_seconds,
                        run.registered.wall_seconds,
                        run.delete.wall_seconds,
                        run.manager_end.peak_rss_mib,
                        run.agents_after_provision.rss_mib_total,
                        run.pairing.violations()
                    );
                    (Some(run), None)
                }
                Err(err) => {
                    eprintln!("bench N={n}: BYOH failed: {err:#}");
                    (None, Some(format!("{err:#}")))
                }
            }
        }
    };
    drop(farm);
    Ok(SizeResult {
        n,
        farm_start_seconds,
        hosts_idle,
        floor,
        floor_runs,
        capssh,
        capssh_error,
        blackholed_hosts,
        capssh_blackholed,
        capssh_blackholed_error,
        peer: peers.k0smotron.clone(),
        byoh,
        byoh_error,
    })
}

/// Why BYOH did not run at a size above `--byoh-max-size`.
pub fn byoh_skipped_above(max: usize) -> String {
    format!("skipped above N={max} (--byoh-max-size): its agents hold about 38 MiB each")
}

/// How many objects the harness creates (or deletes) at once.
pub const CREATE_CONCURRENCY: usize = 16;

/// Runs `create` for every name, [`CREATE_CONCURRENCY`] at a time, and returns when each
/// finished: a machine's clock starts there.
pub async fn create_all<F, Fut>(names: &[String], create: F) -> anyhow::Result<std::collections::HashMap<String, Instant>>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    use futures::{StreamExt, TryStreamExt};
    futures::stream::iter(names.iter().cloned())
        .map(|name| {
            let created = create(name.clone());
            async move {
                created.await?;
                anyhow::Ok((name, Instant::now()))
            }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_collect()
        .await
}

/// One machine's time from created to provisioned: p50, p90 and max, in seconds.
pub fn machine_seconds(
    created: &std::collections::HashMap<String, Instant>,
    provisioned: &std::collections::HashMap<String, Instant>,
) -> (f64, f64, f64) {
    let mut each: Vec<f64> =
        provisioned.iter().filter_map(|(name, at)| created.get(name).map(|from| at.duration_since(*from).as_secs_f64())).collect();
    each.sort_by(f64::total_cmp);
    (quantile(&each, 0.5), quantile(&each, 0.9), each.last().copied().unwrap_or(0.0))
}

/// The q-quantile of sorted values (nearest rank; 0 when empty).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_bootstrap_data_translates() {
        // The runcmd lines travel inside the script as data, so look for the step, not the text.
        let script = super::job_script().unwrap();
        assert!(script.contains("[capssh] runcmd: %s commands"), "{script}");
    }

    #[test]
    fn a_machines_time_runs_from_its_creation_to_provisioned() {
        let t0 = std::time::Instant::now();
        let at = |s: u64| t0 + std::time::Duration::from_secs(s);
        let created = [("a".to_string(), at(0)), ("b".to_string(), at(1))].into_iter().collect();
        let provisioned = [("a".to_string(), at(4)), ("b".to_string(), at(3))].into_iter().collect();
        assert_eq!(super::machine_seconds(&created, &provisioned), (2.0, 4.0, 4.0));
        assert_eq!(super::machine_seconds(&created, &Default::default()), (0.0, 0.0, 0.0));
    }

    #[test]
    fn byoh_says_plainly_why_it_skipped_a_size() {
        assert_eq!(super::byoh_skipped_above(200), "skipped above N=200 (--byoh-max-size): its agents hold about 38 MiB each");
    }

    #[test]
    fn quantiles() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(super::quantile(&v, 0.5), 2.0);
        assert_eq!(super::quantile(&v, 1.0), 4.0);
        assert_eq!(super::quantile(&[], 0.5), 0.0);
    }
}
