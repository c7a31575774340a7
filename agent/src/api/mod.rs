//! The HTTP/JSON API, as one typed contract: `routes` (every path once),
//! `types` (request and response bodies), `error` (error bodies and
//! classes). The server (`router` + `server`) and the client (`client`,
//! used by the CLI, `demo` and `bench-api`) are both built from it, and
//! agent/openapi.json documents it (a test keeps them equal).

pub mod client;
pub mod error;
pub mod peer;
pub mod router;
pub mod routes;
pub mod server;
pub mod types;

pub use client::Client;
pub use error::{ApiError, ClientError};

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 64 * 1024;
/// Longest wait for a request's body once its headers are in.
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[cfg(test)]
mod tests;
