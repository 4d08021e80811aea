//! The pool and its claims: which SSHHost a machine may take, and why the others were skipped.

pub mod claim;
pub mod probed;
pub mod selection;
pub mod unanswered;
pub mod work;

pub use selection::{Selection, Skip, select};
