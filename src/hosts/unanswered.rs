//! Hosts that did not answer a connection when a machine was about to claim them. The pool's
//! phases come from the hosts' probes, minutes apart: a host gone dark since its last probe
//! still looks Available. Machines skip the hosts listed here until the next probe has had time
//! to record what it finds, so a dead host costs one connect timeout, not one per machine.
//! Kept in memory only: a restarted manager relearns it at the same price.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct UnansweredHosts {
    /// How long a host stays skipped after it did not answer.
    window: Duration,
    /// Host pool key (`<namespace>/<name>`) → when it did not answer.
    since: Mutex<HashMap<String, Instant>>,
}

impl UnansweredHosts {
    pub fn new(window: Duration) -> Self {
        Self { window, since: Mutex::new(HashMap::new()) }
    }

    /// `host` (`<namespace>/<name>`) did not answer at `now`.
    pub fn mark(&self, host: &str, now: Instant) {
        self.lock().insert(host.to_string(), now);
    }

    /// `host` answered: it is chosen again like any other.
    pub fn clear(&self, host: &str) {
        self.lock().remove(host);
    }

    /// The names of the hosts in `namespace` that did not answer within the window before
    /// `now`; older marks are forgotten.
    pub fn in_namespace(&self, namespace: &str, now: Instant) -> HashSet<String> {
        let mut since = self.lock();
        since.retain(|_, at| now.saturating_duration_since(*at) < self.window);
        since.keys().filter_map(|key| key.strip_prefix(namespace)?.strip_prefix('/')).map(str::to_string).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        // A panic while holding it leaves a map that is still consistent.
        self.since.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_that_did_not_answer_is_skipped_for_the_window_in_its_namespace_only() {
        let hosts = UnansweredHosts::new(Duration::from_secs(300));
        let t0 = Instant::now();
        hosts.mark("pool/h1", t0);
        hosts.mark("pool-b/h2", t0);
        let names = |at: Instant| {
            let mut v: Vec<String> = hosts.in_namespace("pool", at).into_iter().collect();
            v.sort();
            v
        };
        assert_eq!(names(t0 + Duration::from_secs(299)), ["h1"]);
        assert!(hosts.in_namespace("poo", t0).is_empty(), "a namespace is matched whole");
        assert!(names(t0 + Duration::from_secs(300)).is_empty(), "forgotten once the next probe has run");
        hosts.mark("pool/h1", t0);
        hosts.clear("pool/h1");
        assert!(names(t0).is_empty(), "a host that answered again is chosen like any other");
    }
}
