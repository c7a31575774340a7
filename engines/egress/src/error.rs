//! The engine's errors. Connection-level failures are logged and answered
//! (reset, 403, 502, 504); only configuration errors reach the caller.

use std::net::SocketAddr;
use std::time::Duration;

/// A proxy variable that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}={value:?}: {reason}")]
pub struct ConfigError {
    pub var: String,
    /// The value, credentials replaced by `***`.
    pub value: String,
    pub reason: String,
}

/// Why a way out could not be opened for one connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to {target}: {source}")]
    Direct {
        target: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("no address for {host:?}: {reason}")]
    Resolve { host: String, reason: String },
    #[error("connect to upstream proxy {proxy}: {source}")]
    ProxyConnect {
        proxy: String,
        #[source]
        source: std::io::Error,
    },
    #[error("upstream proxy {proxy} refused CONNECT {target}: {status}")]
    ProxyRefused {
        proxy: String,
        target: String,
        status: hyper::StatusCode,
    },
    #[error("upstream proxy {proxy} failed on CONNECT {target}: {source}")]
    ProxyProtocol {
        proxy: String,
        target: String,
        #[source]
        source: hyper::Error,
    },
    #[error("{what} did not answer within {after:?}")]
    Timeout { what: String, after: Duration },
}

impl ConnectError {
    /// 504 for a timeout, 502 for everything else (explicit proxy).
    pub fn status(&self) -> hyper::StatusCode {
        match self {
            ConnectError::Timeout { .. } => hyper::StatusCode::GATEWAY_TIMEOUT,
            _ => hyper::StatusCode::BAD_GATEWAY,
        }
    }
}
