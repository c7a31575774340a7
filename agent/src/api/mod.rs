//! The HTTP/JSON API, as one typed contract: `routes` (every path once),
//! `types` (request and response bodies), `error` (error bodies and
//! classes). The server (`router` + `server`) and the client (`client`,
//! used by the CLI, `demo` and `bench-api`) are both built from it, and
//! agent/openapi.json documents it (a test keeps them equal).

pub mod client;
pub mod error;
mod idle;
pub mod limits;
pub mod peer;
pub mod router;
pub mod routes;
pub mod server;
pub mod types;

pub use client::Client;
pub use error::{ApiError, ClientError};

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 64 * 1024;
/// Longest wait for a request's body once its headers are in (the
/// default; the server passes its configured one in `BodyTimeout`).
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The body time-out of a connection, a request extension set by the
/// server (`api_body_timeout_ms`).
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeout(pub std::time::Duration);

#[cfg(test)]
mod tests;
