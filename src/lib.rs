//! capssh: a Cluster API infrastructure provider for hosts reachable over SSH.
//!
//! Layout: `api` is what is stored, `controllers` is what happens when, `ssh` is how a host is
//! touched, `bootstrap` is what runs there, `hosts` is the pool and its claims. `manager` and
//! `webhook` are the long-running process around them.

pub mod api;
pub mod bootstrap;
pub mod cli;
pub mod controllers;
pub mod hosts;
pub mod manager;
pub mod redact;
pub mod ssh;
pub mod webhook;

/// This release's version (Cargo.toml), as clusterctl names it without the leading "v".
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
