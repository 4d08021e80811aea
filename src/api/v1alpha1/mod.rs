//! API version v1alpha1 of group infrastructure.cluster.x-k8s.io.

mod common;
pub mod conditions;
mod preparation;
mod sshcluster;
mod sshhost;
mod sshmachine;
mod templates;

pub use common::*;
pub use preparation::*;
pub use sshcluster::*;
pub use sshhost::*;
pub use sshmachine::*;
pub use templates::*;

pub const VERSION: &str = "v1alpha1";
