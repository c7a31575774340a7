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
    /// Default limits of namespace listeners that do not bring their own.
    pub limits: Limits,
    /// Default limits of shared listeners that do not bring their own.
    pub shared_limits: Limits,
    /// Queries waiting (held or forwarded) across all listeners; beyond it
    /// new slow queries are dropped (clients retry).
    pub max_pending: usize,
    /// Threads serving listeners (each a current-thread runtime; listeners
    /// are spread over them). One thread answers tens of thousands of
    /// queries per second.
    pub threads: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            upstreams: Vec::new(),
            local_ttl: DOCKER_TTL,
            hold_timeout: Duration::from_secs(1),
            forward: ForwardConfig::default(),
            limits: Limits::default(),
            shared_limits: Limits::shared(),
            max_pending: 4096,
            threads: 1,
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
    /// Forwarded answers kept (positive and negative), by (name, type);
    /// 0 turns the cache off.
    pub cache_size: usize,
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
    /// Most datagrams read per system call (`recvmmsg`; answers go out
    /// with one `sendmmsg`). Each is a 4 KiB buffer, allocated only once a
    /// batch came back full. More for a shared listener, so that one
    /// flooding client cannot overflow the shared receive queue before the
    /// engine drops its packets.
    pub udp_batch: usize,
    /// Receive buffer asked for the UDP socket (`SO_RCVBUFFORCE` when the
    /// daemon may, else `SO_RCVBUF` up to `net.core.rmem_max`); `None`
    /// keeps the socket's. A shared socket needs room to ride out the
    /// moments the engine is not scheduled while one client floods it.
    pub udp_recv_buffer: Option<usize>,
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
            udp_batch: 8,
            udp_recv_buffer: None,
        }
    }
}

impl Limits {
    /// Defaults for a shared listener: many clients, so more room in total
    /// (the per-source limits are those of a namespace).
    pub fn shared() -> Self {
        Self {
            listener_qps: 20_000,
            listener_burst: 40_000,
            max_pending: 1024,
            tcp_max_connections: 128,
            udp_batch: 32,
            udp_recv_buffer: Some(4 << 20),
            ..Self::default()
        }
    }

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
