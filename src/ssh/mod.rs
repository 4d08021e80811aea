//! How a host is touched: SSH connections with pinned host keys, commands run through
//! `sudo -n` when the login user is not root, uploads over stdin (never on a command line),
//! host facts, and host-side jobs that survive the connection (and capssh) going away.
//! [`HostOps`] is the seam: what the controllers and the CLI do to a host, over SSH or, in
//! unit tests, in memory.

mod error;
#[cfg(test)]
pub mod fake;
pub mod hostkey;
pub mod job;
mod ops;
mod pool;
pub mod probe;
mod session;
mod wait;

pub use error::SshError;
pub use ops::HostOps;
pub use pool::{Lease, PoolKey, SessionPool};
pub use session::{Credentials, Endpoint, MAX_OUTPUT_BYTES, Output, Session, Target, Timeouts};
pub use wait::accounted;
