//! When this manager last probed each free host. A probe that finds the host as its status
//! already says writes nothing (an idle pool costs the API server no writes, and Cluster API's
//! check that a cluster's objects stop changing holds for its hosts too), so the status's
//! `lastProbeTime` is when a probe last found something new; the next probe is due an interval
//! after the later of the two. Kept in memory only: a restarted manager probes its free hosts
//! once, then keeps the interval.

use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Default)]
pub struct ProbeTimes {
    /// Host pool key (`<namespace>/<name>`) → when it was last probed and answered.
    at: Mutex<HashMap<String, jiff::Timestamp>>,
}

impl ProbeTimes {
    /// `host` was probed at `now`.
    pub fn record(&self, host: &str, now: jiff::Timestamp) {
        self.lock().insert(host.to_string(), now);
    }

    /// When `host` was last probed by this manager, if it was.
    pub fn last(&self, host: &str) -> Option<jiff::Timestamp> {
        self.lock().get(host).copied()
    }

    /// A deleted host is forgotten.
    pub fn forget(&self, host: &str) {
        self.lock().remove(host);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, jiff::Timestamp>> {
        // A panic while holding it leaves a map that is still consistent.
        self.at.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
