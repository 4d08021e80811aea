//! One reusable connection per host, and a bound on how many hosts are worked on at once.

use super::{Session, SshError, Target, Timeouts};
use std::collections::HashMap;
use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};

/// Which host a session is for, and everything that decides trust in it (address, user,
/// credentials' versions, pins): a change of the latter opens a new connection, verified again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolKey {
    pub host: String,
    pub trust: String,
}

impl PoolKey {
    /// The `host` part of an SSHHost's key.
    pub fn host_of(namespace: &str, name: &str) -> String {
        format!("{namespace}/{name}")
    }
}

pub struct SessionPool {
    /// One session per host: a session made under older trust is dropped when a new one is made.
    sessions: Mutex<HashMap<String, Pooled>>,
    /// Open sessions kept beyond those in use: the least recently used idle ones are closed
    /// past this (each holds about 128 KiB here and a process on the host).
    keep: usize,
    /// Hosts worked on at once (held while a lease lives).
    limit: Arc<Semaphore>,
    /// Connections being opened at once. Separate from `limit`: a rack of unreachable hosts
    /// waiting out their connect timeouts must not hold up work on the hosts that answer.
    connecting: Arc<Semaphore>,
    timeouts: Timeouts,
}

struct Pooled {
    trust: String,
    session: Arc<Session>,
    used: Instant,
}

/// Which idle sessions to close so that at most `keep` stay open: the least recently used of
/// those nobody holds. Sessions in use are never closed, even past `keep`.
fn idle_beyond<'a>(sessions: impl Iterator<Item = (&'a String, bool, Instant)>, keep: usize) -> Vec<String> {
    let all: Vec<(&String, bool, Instant)> = sessions.collect();
    let mut idle: Vec<(&String, Instant)> = all.iter().filter(|(_, in_use, _)| !in_use).map(|(host, _, used)| (*host, *used)).collect();
    idle.sort_by_key(|(_, used)| *used);
    idle.into_iter().take(all.len().saturating_sub(keep)).map(|(host, _)| host.clone()).collect()
}

/// A session in use; the pool's concurrency slot is released when it is dropped.
pub struct Lease {
    session: Arc<Session>,
    _permit: OwnedSemaphorePermit,
}

impl Deref for Lease {
    type Target = Session;
    fn deref(&self) -> &Session {
        &self.session
    }
}

impl SessionPool {
    /// `max_concurrent`: how many leases (hosts being worked on) may exist at once; as many
    /// connections again may be opening.
    pub fn new(max_concurrent: usize, timeouts: Timeouts) -> Self {
        let max = max_concurrent.max(1);
        Self {
            sessions: Mutex::new(HashMap::new()),
            keep: max,
            limit: Arc::new(Semaphore::new(max)),
            connecting: Arc::new(Semaphore::new(max)),
            timeouts,
        }
    }

    /// A session to `target`, reusing the host's open one when it was made under the same trust.
    pub async fn lease(&self, key: &PoolKey, target: &Target) -> Result<Lease, SshError> {
        super::wait::on_host(self.open_or_reuse(key, target, &self.timeouts)).await
    }

    /// [`Self::lease`], with a new connection's TCP connect given at most `tcp`.
    pub async fn lease_answering_within(&self, key: &PoolKey, target: &Target, tcp: Duration) -> Result<Lease, SshError> {
        let timeouts = Timeouts { tcp: tcp.min(self.timeouts.tcp), ..self.timeouts };
        super::wait::on_host(self.open_or_reuse(key, target, &timeouts)).await
    }

    async fn open_or_reuse(&self, key: &PoolKey, target: &Target, timeouts: &Timeouts) -> Result<Lease, SshError> {
        let reusable = self.sessions.lock().await.get_mut(&key.host).filter(|p| p.trust == key.trust && p.session.is_usable()).map(|p| {
            p.used = Instant::now();
            p.session.clone()
        });
        let session = match reusable {
            Some(session) => session,
            None => {
                let _connecting = self.connecting.clone().acquire_owned().await.expect("the pool's semaphore is never closed");
                let session = Arc::new(Session::connect(target, timeouts).await?);
                let mut sessions = self.sessions.lock().await;
                sessions.insert(key.host.clone(), Pooled { trust: key.trust.clone(), session: session.clone(), used: Instant::now() });
                // Held here and by whoever leases it: only the pool's own reference is idle.
                let close = idle_beyond(sessions.iter().map(|(host, p)| (host, Arc::strong_count(&p.session) > 1, p.used)), self.keep);
                for host in close {
                    sessions.remove(&host);
                }
                session
            }
        };
        let permit = self.limit.clone().acquire_owned().await.expect("the pool's semaphore is never closed");
        Ok(Lease { session, _permit: permit })
    }

    /// Drops the host's connection (a free host's after its probe, a released host's); it closes
    /// when its last lease ends. A session that failed needs no call: it marked itself broken
    /// and is replaced on the next lease.
    pub async fn forget(&self, host: &str) {
        self.sessions.lock().await.remove(host);
    }

    /// Open connections (for metrics).
    pub async fn open_connections(&self) -> usize {
        self.sessions.lock().await.values().filter(|p| !p.session.is_closed()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::idle_beyond;
    use std::time::{Duration, Instant};

    #[test]
    fn past_the_bound_the_least_recently_used_idle_sessions_close_and_busy_ones_never() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let hosts: Vec<String> = ["a", "b", "c", "d"].iter().map(|h| h.to_string()).collect();
        // a: idle, oldest; b: in use, older still than c; c: idle; d: idle, newest.
        let sessions = || vec![(&hosts[0], false, at(1)), (&hosts[1], true, at(0)), (&hosts[2], false, at(2)), (&hosts[3], false, at(3))].into_iter();
        assert_eq!(idle_beyond(sessions(), 4), Vec::<String>::new());
        assert_eq!(idle_beyond(sessions(), 2), ["a", "c"]);
        assert_eq!(idle_beyond(sessions(), 0), ["a", "c", "d"], "b is in use");
    }
}
