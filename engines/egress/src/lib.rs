//! conductor-egress: the protocol engine behind conductor-net's `proxy`
//! egress backend. It has no policy of its own: every connection is put to
//! a [`Policy`] hook (default: allow all) and the answer enforced.
//!
//! - [`Engine::serve_transparent`]: connections redirected by the kernel
//!   (iptables `REDIRECT`), sent on to their original destination
//!   (`SO_ORIGINAL_DST`), directly or through the sandbox's own HTTP proxy
//!   with CONNECT, naming the destination by TLS SNI / HTTP Host when the
//!   first bytes carry one. Data moves with splice(2) where the kernel
//!   allows it.
//! - [`Engine::serve_explicit`]: an HTTP proxy (CONNECT and absolute-form
//!   requests) for endpoints where even REDIRECT is unavailable.

#![forbid(unsafe_code)]

mod connect;
mod engine;
pub mod error;
mod explicit;
pub mod policy;
pub mod relay;
pub mod sniff;
mod transparent;
pub mod upstream;

#[cfg(test)]
mod tests;

pub use engine::{Engine, EngineConfig, Stats};
pub use error::{ConfigError, ConnectError};
pub use policy::{AllowAll, Decision, Mode, Policy, Request};
pub use relay::CopyMode;
pub use transparent::original_destination;
pub use upstream::{NoProxy, Protocol, ProxyEnv, ProxyUrl};
