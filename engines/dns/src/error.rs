//! The engine's typed errors. Each names the value it refuses.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything the engine's public API can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A name handed to the record table is not a usable DNS name.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },

    /// A scope or endpoint id is empty or too long.
    #[error("invalid {what} id {id:?}: {reason}")]
    InvalidId {
        what: &'static str,
        id: String,
        reason: &'static str,
    },

    /// An endpoint record carries no address at all.
    #[error("endpoint {endpoint:?} in scope {scope:?} has no address")]
    NoAddress { scope: String, endpoint: String },

    /// The engine's serving thread could not be started.
    #[error("cannot start the DNS engine's thread: {source}")]
    Thread {
        #[source]
        source: io::Error,
    },

    /// A socket handed to the engine could not be registered with tokio.
    #[error("cannot use {kind} socket {addr}: {source}")]
    Socket {
        kind: &'static str,
        addr: String,
        #[source]
        source: io::Error,
    },

    /// Opening a listener's socket failed.
    #[error("cannot open {proto} socket on {addr} ({step}): {source}")]
    Bind {
        proto: &'static str,
        addr: SocketAddr,
        step: &'static str,
        #[source]
        source: io::Error,
    },

    /// The forwarder could not be built for these upstreams.
    #[error("cannot forward to {upstreams:?}: {reason}")]
    Upstreams {
        upstreams: Vec<SocketAddr>,
        reason: String,
    },

    /// resolv.conf could not be read.
    #[error("cannot read {path}: {source}")]
    ReadResolvConf {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// resolv.conf does not parse.
    #[error("resolv.conf line {line}: {reason}")]
    ParseResolvConf { line: usize, reason: String },
}

/// Result with the engine's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
