//! conductor-net's DNS engine.
//!
//! A protocol engine with no policy of its own: the daemon says which
//! records exist (per scope = per network), which listener (a socket pair
//! opened inside a container's namespace, or a shared address whose clients
//! are told apart by source address) sees which scopes, where to forward,
//! and which names a policy refuses. The engine answers: local names from
//! an in-place record table (an update is visible to the next query),
//! everything else through a caching forwarder, with rate limits, bounded
//! queues and prompt listener removal. Wire format: hickory-proto and
//! hickory-server; forwarding: hickory-resolver. See README.md.

#![forbid(unsafe_code)]

mod cache;
mod config;
mod engine;
mod error;
mod forward;
mod listener;
mod names;
mod policy;
mod ratelimit;
mod records;
pub mod resolv_conf;
mod respond;
mod scopes;
mod stats;
pub mod stub;
mod threads;
mod upstream_sockets;

pub use config::{EngineConfig, ForwardConfig, Limits, DOCKER_TTL};
pub use engine::Engine;
pub use error::{Error, Result};
pub use listener::{BindOptions, ListenerSockets, NamespaceListener, SharedListener};
pub use policy::{PolicyQuery, QueryPolicy, Verdict};
pub use records::{EndpointRecord, RecordTable};
pub use resolv_conf::{Nameserver, ResolvConf};
pub use scopes::{ClientScopes, ScopeId};
pub use stats::ListenerStats;

/// Re-exported so the daemon and tests name the same types.
pub use hickory_proto as proto;

/// README.md's examples compile (`cargo test --doc`).
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
