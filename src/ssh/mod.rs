//! How a host is touched: SSH connections with pinned host keys, commands run through
//! `sudo -n` when the login user is not root, uploads over stdin (never on a command line),
//! host facts, and host-side jobs that survive the connection (and capssh) going away.

mod error;
pub mod hostkey;
pub mod job;
mod pool;
pub mod probe;
mod session;

pub use error::SshError;
pub use pool::SessionPool;
pub use session::{Credentials, Endpoint, Output, Session, Target, Timeouts};
