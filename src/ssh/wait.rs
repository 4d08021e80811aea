//! How long a piece of work waited on hosts: connecting, waiting for a slot of the pool, and
//! commands. A reconcile's own cost (deciding, API requests) is its duration minus this; the
//! hosts' time is theirs (a job poll on a loaded host is slow, and that is not the manager's).

use std::cell::Cell;
use std::future::Future;
use std::time::{Duration, Instant};

tokio::task_local! {
    static WAITED: Cell<Duration>;
}

/// Runs `work`, and returns with its output how long it waited inside [`on_host`] calls.
pub async fn accounted<F: Future>(work: F) -> (F::Output, Duration) {
    WAITED
        .scope(Cell::new(Duration::ZERO), async {
            let output = work.await;
            (output, WAITED.with(Cell::get))
        })
        .await
}

/// Runs `wait` (something that waits on a host) and adds its time to the enclosing
/// [`accounted`] work, when there is one. Not nested: each wait is counted once.
pub(super) async fn on_host<F: Future>(wait: F) -> F::Output {
    let started = Instant::now();
    let output = wait.await;
    let _ = WAITED.try_with(|waited| waited.set(waited.get() + started.elapsed()));
    output
}
