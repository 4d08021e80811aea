//! What the manager did, from two outside sources: its own Prometheus metrics (reconcile counts
//! and latency histograms) and the API server's audit log (every request made under the
//! manager's own client identity). The peer's controller-runtime metrics and its several
//! identities are read with the same tools.

use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// The client certificate CN the manager runs as in the benchmark; only it is audited.
pub const MANAGER_USER: &str = "capssh-bench-manager";

/// An audit policy that records one event (at RequestReceived) per request of [`MANAGER_USER`].
pub fn audit_policy() -> String {
    format!(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [ResponseStarted, ResponseComplete, Panic]\nrules:\n\
         - level: Metadata\n  users: [\"{MANAGER_USER}\"]\n- level: None\n"
    )
}

/// The kube-apiserver flags that write [`audit_policy`]'s log to `log`.
pub fn audit_args(policy: &Path, log: &Path) -> Vec<String> {
    vec![
        format!("--audit-policy-file={}", policy.display()),
        format!("--audit-log-path={}", log.display()),
        "--audit-log-format=json".into(),
        "--audit-log-mode=blocking".into(),
        "--audit-log-maxsize=0".into(),
    ]
}

/// Requests in the audit log from byte `from` to `to`, by `verb resource[/subresource]`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Requests {
    pub total: u64,
    pub by_kind: BTreeMap<String, u64>,
}

/// The audit log's size now (a phase boundary).
pub fn audit_offset(log: &Path) -> u64 {
    std::fs::metadata(log).map(|m| m.len()).unwrap_or(0)
}

pub fn count_requests(log: &Path, from: u64, to: u64) -> anyhow::Result<Requests> {
    let bytes = std::fs::read(log)?;
    let slice = &bytes[(from as usize).min(bytes.len())..(to as usize).min(bytes.len())];
    let [requests] = count_requests_by(slice, |user, _| if user == MANAGER_USER { Some(0) } else { None });
    Ok(requests)
}

/// Requests in audit log text (JSON lines), split into `N` tallies: `who(username, groups)` says
/// which tally a request belongs to, or None to leave it out.
pub fn count_requests_by<const N: usize>(log: &[u8], who: impl Fn(&str, &[&str]) -> Option<usize>) -> [Requests; N] {
    let mut tallies: [Requests; N] = std::array::from_fn(|_| Requests::default());
    for line in log.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let Ok(event) = serde_json::from_slice::<serde_json::Value>(line) else { continue };
        let user = event.pointer("/user/username").and_then(|u| u.as_str()).unwrap_or_default();
        let groups: Vec<&str> = event.pointer("/user/groups").and_then(|g| g.as_array()).into_iter().flatten().filter_map(|g| g.as_str()).collect();
        let Some(requests) = who(user, &groups).and_then(|i| tallies.get_mut(i)) else { continue };
        let verb = event["verb"].as_str().unwrap_or("?");
        let resource = match (event.pointer("/objectRef/resource"), event.pointer("/objectRef/subresource")) {
            (Some(r), Some(s)) => format!("{}/{}", r.as_str().unwrap_or("?"), s.as_str().unwrap_or("?")),
            (Some(r), None) => r.as_str().unwrap_or("?").to_string(),
            _ => event["requestURI"].as_str().unwrap_or("?").split('?').next().unwrap_or("?").to_string(),
        };
        requests.total += 1;
        *requests.by_kind.entry(format!("{verb} {resource}")).or_default() += 1;
    }
    tallies
}

/// One scrape of the manager's histograms and counters we report on.
#[derive(Clone, Debug, Default)]
pub struct Scrape {
    /// kind -> (upper bound -> cumulative count) of capssh_reconcile_duration_seconds.
    pub buckets: BTreeMap<String, Vec<(f64, f64)>>,
    /// The same of capssh_reconcile_outside_ssh_duration_seconds (a reconcile's time minus its
    /// SSH waits).
    pub outside_ssh: BTreeMap<String, Vec<(f64, f64)>>,
    /// kind -> capssh_reconciles_total summed over results.
    pub reconciles: BTreeMap<String, f64>,
}

pub fn parse_metrics(text: &str) -> Scrape {
    let mut scrape = Scrape::default();
    for (name, labels, value) in samples(text) {
        let kind = labels.get("kind").cloned().unwrap_or_default();
        match (name, le_of(&labels)) {
            ("capssh_reconcile_duration_seconds_bucket", Some(le)) => scrape.buckets.entry(kind).or_default().push((le, value)),
            ("capssh_reconcile_outside_ssh_duration_seconds_bucket", Some(le)) => scrape.outside_ssh.entry(kind).or_default().push((le, value)),
            ("capssh_reconciles_total", _) => *scrape.reconciles.entry(kind).or_default() += value,
            _ => {}
        }
    }
    sort_buckets(scrape)
}

/// The same from a controller-runtime manager (the peer's): controller_runtime_reconcile_time_seconds
/// and controller_runtime_reconcile_total, keyed by their `controller` label (e.g. `byomachine`).
/// There is no time outside SSH there: those histograms stay empty.
pub fn parse_controller_runtime_metrics(text: &str) -> Scrape {
    let mut scrape = Scrape::default();
    for (name, labels, value) in samples(text) {
        let controller = labels.get("controller").cloned().unwrap_or_default();
        match (name, le_of(&labels)) {
            ("controller_runtime_reconcile_time_seconds_bucket", Some(le)) => scrape.buckets.entry(controller).or_default().push((le, value)),
            ("controller_runtime_reconcile_total", _) => *scrape.reconciles.entry(controller).or_default() += value,
            _ => {}
        }
    }
    sort_buckets(scrape)
}

/// Every sample of a Prometheus text exposition: (metric name, labels, value).
fn samples(text: &str) -> impl Iterator<Item = (&str, BTreeMap<String, String>, f64)> {
    text.lines().filter(|l| !l.starts_with('#')).filter_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let value = value.parse::<f64>().ok()?;
        Some(match series.split_once('{') {
            Some((name, rest)) => (name, labels_of(rest.trim_end_matches('}')), value),
            None => (series, BTreeMap::new(), value),
        })
    })
}

fn le_of(labels: &BTreeMap<String, String>) -> Option<f64> {
    labels.get("le").map(|l| if l == "+Inf" { f64::INFINITY } else { l.parse().unwrap_or(f64::NAN) })
}

fn sort_buckets(mut scrape: Scrape) -> Scrape {
    for buckets in scrape.buckets.values_mut().chain(scrape.outside_ssh.values_mut()) {
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    scrape
}

fn labels_of(text: &str) -> BTreeMap<String, String> {
    text.split(',').filter_map(|pair| pair.split_once('=')).map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string())).collect()
}

/// Reconcile latency of one kind between two scrapes.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    pub reconciles: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    /// The same percentiles of the time outside SSH.
    pub outside_ssh_p50_ms: f64,
    pub outside_ssh_p90_ms: f64,
    pub outside_ssh_p99_ms: f64,
}

/// The reconciles of `kind` between `before` and `after`, with percentiles interpolated inside
/// the histogram's buckets as Prometheus' histogram_quantile does.
pub fn latency(before: &Scrape, after: &Scrape, kind: &str) -> Latency {
    let total = between(&before.buckets, &after.buckets, kind);
    let outside = between(&before.outside_ssh, &after.outside_ssh, kind);
    let ms = |buckets: &[(f64, f64)], q: f64| histogram_quantile(buckets, q) * 1000.0;
    Latency {
        reconciles: after.reconciles.get(kind).copied().unwrap_or(0.0) - before.reconciles.get(kind).copied().unwrap_or(0.0),
        p50_ms: ms(&total, 0.5),
        p90_ms: ms(&total, 0.9),
        p99_ms: ms(&total, 0.99),
        outside_ssh_p50_ms: ms(&outside, 0.5),
        outside_ssh_p90_ms: ms(&outside, 0.9),
        outside_ssh_p99_ms: ms(&outside, 0.99),
    }
}

/// The buckets of `kind` filled between two scrapes.
fn between(before: &BTreeMap<String, Vec<(f64, f64)>>, after: &BTreeMap<String, Vec<(f64, f64)>>, kind: &str) -> Vec<(f64, f64)> {
    let empty = Vec::new();
    let old = before.get(kind).unwrap_or(&empty);
    let new = after.get(kind).unwrap_or(&empty);
    new.iter().map(|(le, count)| (*le, count - old.iter().find(|(l, _)| l == le).map(|(_, c)| *c).unwrap_or(0.0))).collect()
}

fn histogram_quantile(buckets: &[(f64, f64)], q: f64) -> f64 {
    let Some(&(_, total)) = buckets.last() else { return 0.0 };
    if total <= 0.0 {
        return 0.0;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return lower.0; // beyond the last finite bound: report that bound
            }
            let span = count - lower.1;
            return if span <= 0.0 { le } else { lower.0 + (le - lower.0) * (rank - lower.1) / span };
        }
        lower = (le, count);
    }
    lower.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_inside_buckets() {
        let text = "# HELP x\ncapssh_reconcile_duration_seconds_bucket{kind=\"SSHMachine\",le=\"0.001\"} 0\n\
                    capssh_reconcile_duration_seconds_bucket{kind=\"SSHMachine\",le=\"0.002\"} 50\n\
                    capssh_reconcile_duration_seconds_bucket{kind=\"SSHMachine\",le=\"0.004\"} 100\n\
                    capssh_reconcile_duration_seconds_bucket{kind=\"SSHMachine\",le=\"+Inf\"} 100\n\
                    capssh_reconcile_outside_ssh_duration_seconds_bucket{kind=\"SSHMachine\",le=\"0.001\"} 100\n\
                    capssh_reconcile_outside_ssh_duration_seconds_bucket{kind=\"SSHMachine\",le=\"+Inf\"} 100\n\
                    capssh_reconciles_total{kind=\"SSHMachine\",result=\"ok\"} 90\n\
                    capssh_reconciles_total{kind=\"SSHMachine\",result=\"error\"} 10\n";
        let l = latency(&Scrape::default(), &parse_metrics(text), "SSHMachine");
        assert_eq!(l.reconciles, 100.0);
        assert!((l.p50_ms - 2.0).abs() < 1e-9, "{l:?}");
        assert!((l.p90_ms - 3.6).abs() < 1e-9, "{l:?}");
        assert!(l.outside_ssh_p99_ms <= 1.0, "every reconcile in the first bucket: {l:?}");
    }

    #[test]
    fn controller_runtime_histograms_by_controller() {
        let text = "# TYPE controller_runtime_reconcile_time_seconds histogram\n\
                    controller_runtime_reconcile_time_seconds_bucket{controller=\"byomachine\",le=\"0.005\"} 10\n\
                    controller_runtime_reconcile_time_seconds_bucket{controller=\"byomachine\",le=\"0.01\"} 20\n\
                    controller_runtime_reconcile_time_seconds_bucket{controller=\"byomachine\",le=\"+Inf\"} 20\n\
                    controller_runtime_reconcile_time_seconds_bucket{controller=\"byohost\",le=\"+Inf\"} 7\n\
                    controller_runtime_reconcile_total{controller=\"byomachine\",result=\"success\"} 15\n\
                    controller_runtime_reconcile_total{controller=\"byomachine\",result=\"error\"} 3\n\
                    controller_runtime_reconcile_total{controller=\"byomachine\",result=\"requeue_after\"} 2\n";
        let scrape = parse_controller_runtime_metrics(text);
        let l = latency(&Scrape::default(), &scrape, "byomachine");
        assert_eq!(l.reconciles, 20.0);
        assert!((l.p50_ms - 5.0).abs() < 1e-9, "{l:?}");
        assert_eq!(l.outside_ssh_p99_ms, 0.0, "no SSH split for a controller-runtime manager");
        assert_eq!(scrape.buckets["byohost"], vec![(f64::INFINITY, 7.0)]);
    }

    #[test]
    fn audit_events_split_by_identity() {
        let log = br#"{"verb":"get","user":{"username":"capssh-bench-manager","groups":["system:masters"]},"objectRef":{"resource":"secrets"}}
{"verb":"patch","user":{"username":"byoh:host:h1","groups":["byoh:hosts","system:authenticated"]},"objectRef":{"resource":"byohosts","subresource":"status"}}
{"verb":"get","user":{"username":"someone","groups":[]},"requestURI":"/readyz?verbose"}
not json
"#;
        let [manager, hosts] = count_requests_by(log, |user, groups| match user {
            MANAGER_USER => Some(0),
            _ if groups.contains(&"byoh:hosts") => Some(1),
            _ => None,
        });
        assert_eq!((manager.total, hosts.total), (1, 1));
        assert_eq!(hosts.by_kind["patch byohosts/status"], 1);
        let [everyone] = count_requests_by(log, |_, _| Some(0));
        assert_eq!(everyone.by_kind["get /readyz"], 1);
    }
}
