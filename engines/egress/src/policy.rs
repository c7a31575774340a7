//! The policy hook: the engine asks it about every connection and request,
//! and enforces the answer. The engine has no rules of its own; the daemon
//! plugs its policy in (issue 12), the default allows everything.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// How a connection reached the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Redirected by the kernel (REDIRECT + SO_ORIGINAL_DST).
    Transparent,
    /// An explicit proxy client's CONNECT request.
    Connect,
    /// An explicit proxy client's absolute-form request (`GET http://...`).
    Forward,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Transparent => "transparent",
            Mode::Connect => "connect",
            Mode::Forward => "forward",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the engine knows about a connection when it asks.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The destination address. `None` only when an explicit-proxy request
    /// names a host that the engine does not resolve itself because the
    /// connection goes through the upstream proxy, which resolves it.
    pub ip: Option<IpAddr>,
    pub port: u16,
    /// The host name, when known: TLS SNI, HTTP Host, or the name in an
    /// explicit-proxy request. Lower-case, validated as a DNS name.
    pub host: Option<&'a str>,
    /// The client (container) address.
    pub source: SocketAddr,
    /// The label the listener was started with (the network it serves).
    pub network: Option<&'a str>,
    pub mode: Mode,
}

/// The policy's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Refused; `rule` names the rule that refused it (shown to explicit
    /// proxy clients in the 403 body and logged).
    Deny {
        rule: String,
    },
}

/// Decides about every connection the engine handles. Called on the
/// connection's task, so it must be quick and must not block.
pub trait Policy: Send + Sync + 'static {
    fn decide(&self, request: &Request<'_>) -> Decision;

    /// Whether decisions need the host name. When false (and no upstream
    /// proxy is configured) the transparent proxy does not wait for the
    /// client's first bytes, which matters for protocols where the server
    /// speaks first.
    fn wants_host_name(&self) -> bool {
        true
    }
}

/// The default: everything is allowed, nothing needs a host name.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl Policy for AllowAll {
    fn decide(&self, _request: &Request<'_>) -> Decision {
        Decision::Allow
    }

    fn wants_host_name(&self) -> bool {
        false
    }
}
