//! One reusable connection per host, and a bound on how many hosts are worked on at once.

use super::{Session, SshError, Target, Timeouts};
use std::collections::HashMap;
use std::ops::Deref;
use std::sync::Arc;
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};

pub struct SessionPool {
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    limit: Arc<Semaphore>,
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
    /// `max_concurrent`: how many leases (hosts being worked on) may exist at once.
    pub fn new(max_concurrent: usize, timeouts: Timeouts) -> Self {
        Self { sessions: Mutex::new(HashMap::new()), limit: Arc::new(Semaphore::new(max_concurrent.max(1))), timeouts }
    }

    /// A session to `target`, reusing the open one stored under `key`. The key must change
    /// whenever anything that decides trust changes (address, user, credentials, pins), so that
    /// a re-pinned host is verified again on a fresh connection.
    pub async fn lease(&self, key: &str, target: &Target) -> Result<Lease, SshError> {
        let permit = self.limit.clone().acquire_owned().await.expect("the pool's semaphore is never closed");
        if let Some(session) = self.sessions.lock().await.get(key).filter(|s| s.is_usable()).cloned() {
            return Ok(Lease { session, _permit: permit });
        }
        let session = Arc::new(Session::connect(target, &self.timeouts).await?);
        self.sessions.lock().await.insert(key.to_string(), session.clone());
        Ok(Lease { session, _permit: permit })
    }

    /// Drops the connection stored under `key` (when the host is released). A session that
    /// failed needs no call: it marked itself broken and is replaced on the next lease.
    pub async fn forget(&self, key: &str) {
        self.sessions.lock().await.remove(key);
    }

    /// Open connections (for metrics).
    pub async fn open_connections(&self) -> usize {
        self.sessions.lock().await.values().filter(|s| !s.is_closed()).count()
    }
}
