//! Shared pieces of the privileged suites and benchmarks: the runner, the
//! isolation (private namespaces, leak checks) and traffic helpers.

pub mod harness;
pub mod isolation;
pub mod scripted;
pub mod suites;
pub mod util;
