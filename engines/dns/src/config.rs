//! Engine and listener settings, with the defaults the daemon gets.

use std::net::SocketAddr;
use std::time::Duration;

/// Docker's embedded DNS answers its own names with TTL 600 (libnetwork
/// `respTTL`); aardvark-dns uses 60. Clients inside containers rarely cache
/// (glibc does not), so the value matters mostly to caching stubs.
pub const DOCKER_TTL: u32 = 600;

/// Settings of one [`crate::Engine`].
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Upstream resolvers, in order of preference (port usually 53). Empty:
    /// names that are not local get SERVFAIL.
    pub upstreams: Vec<SocketAddr>,
    /// TTL of answers from the record table.
    pub local_ttl: u32,
    /// How long a query on a listener whose scopes are not known yet is held
    /// before it gets SERVFAIL.
    pub hold_timeout: Duration,
    /// Forwarding settings.
    pub forward: ForwardConfig,
    /// Default limits of listeners that do not bring their own.
    pub limits: Limits,
    /// Queries waiting (held or forwarded) across all listeners; beyond it
    /// new slow queries are dropped (clients retry).
    pub max_pending: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            upstreams: Vec::new(),
            local_ttl: DOCKER_TTL,
            hold_timeout: Duration::from_secs(1),
            forward: ForwardConfig::default(),
            limits: Limits::default(),
            max_pending: 4096,
        }
    }
}

/// How names that are not local are forwarded.
#[derive(Debug, Clone)]
pub struct ForwardConfig {
    /// The whole forwarding of one query, all upstreams and retries
    /// included: past it the client gets SERVFAIL. Below glibc's 5 s so the
    /// client sees the failure instead of its own timeout.
    pub deadline: Duration,
    /// One try against one upstream.
    pub attempt_timeout: Duration,
    /// Tries per upstream.
    pub attempts: usize,
    /// Forwarded answers kept (positive and negative), by (name, type).
    pub cache_size: u64,
    /// Never cache a forwarded answer longer than this.
    pub max_ttl: Duration,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(3),
            attempt_timeout: Duration::from_millis(1500),
            attempts: 1,
            cache_size: 4096,
            max_ttl: Duration::from_secs(3600),
        }
    }
}

/// Per-listener limits: every resource a client can make the engine spend.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Sustained queries per second one source address may send.
    pub source_qps: u32,
    /// Burst allowance per source address.
    pub source_burst: u32,
    /// Sustained queries per second of the whole listener.
    pub listener_qps: u32,
    /// Burst allowance of the whole listener.
    pub listener_burst: u32,
    /// Source addresses tracked individually; beyond, new sources share one
    /// bucket.
    pub max_sources: usize,
    /// Queries of this listener waiting at once (held or forwarded).
    pub max_pending: usize,
    /// Open TCP connections; more are closed at once.
    pub tcp_max_connections: usize,
    /// A TCP connection with no complete query for this long is closed.
    pub tcp_idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            source_qps: 1000,
            source_burst: 2000,
            listener_qps: 4000,
            listener_burst: 8000,
            max_sources: 1024,
            max_pending: 256,
            tcp_max_connections: 16,
            tcp_idle_timeout: Duration::from_secs(5),
        }
    }
}

impl Limits {
    /// No rate limit (benchmarks); the other bounds stay.
    pub fn unlimited_rate() -> Self {
        Self {
            source_qps: u32::MAX,
            source_burst: u32::MAX,
            listener_qps: u32::MAX,
            listener_burst: u32::MAX,
            ..Self::default()
        }
    }
}
