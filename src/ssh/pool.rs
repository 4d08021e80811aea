//! One reusable connection per host, and a bound on how many hosts are worked on at once.

use super::{Session, SshError, Target, Timeouts};
use std::collections::HashMap;
use std::ops::Deref;
use std::sync::Arc;
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
    sessions: Mutex<HashMap<String, (String, Arc<Session>)>>,
    /// Hosts worked on at once (held while a lease lives).
    limit: Arc<Semaphore>,
    /// Connections being opened at once. Separate from `limit`: a rack of unreachable hosts
    /// waiting out their connect timeouts must not hold up work on the hosts that answer.
    connecting: Arc<Semaphore>,
    timeouts: Timeouts,
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
        Self { sessions: Mutex::new(HashMap::new()), limit: Arc::new(Semaphore::new(max)), connecting: Arc::new(Semaphore::new(max)), timeouts }
    }

    /// A session to `target`, reusing the host's open one when it was made under the same trust.
    pub async fn lease(&self, key: &PoolKey, target: &Target) -> Result<Lease, SshError> {
        super::wait::on_host(self.open_or_reuse(key, target)).await
    }

    async fn open_or_reuse(&self, key: &PoolKey, target: &Target) -> Result<Lease, SshError> {
        let reusable = self.sessions.lock().await.get(&key.host).filter(|(trust, s)| *trust == key.trust && s.is_usable()).map(|(_, s)| s.clone());
        let session = match reusable {
            Some(session) => session,
            None => {
                let _connecting = self.connecting.clone().acquire_owned().await.expect("the pool's semaphore is never closed");
                let session = Arc::new(Session::connect(target, &self.timeouts).await?);
                self.sessions.lock().await.insert(key.host.clone(), (key.trust.clone(), session.clone()));
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
        self.sessions.lock().await.values().filter(|(_, s)| !s.is_closed()).count()
    }
}
