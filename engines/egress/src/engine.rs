//! The engine: configuration, counters, and the accept loop both proxies
//! share (bounded connections, tasks that end with the listener's future).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::policy::{AllowAll, Policy};
use crate::relay::{self, CopyMode};
use crate::upstream::ProxyEnv;

/// How the engine behaves; `Default` gives the daemon's defaults.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Opening the way out (TCP connect, plus the upstream proxy's answer to
    /// CONNECT) must finish within this, or the client is failed.
    pub connect_timeout: Duration,
    /// How long the transparent proxy waits for a client's first bytes to
    /// learn a host name (only when the policy wants names or an upstream
    /// proxy is set).
    pub sniff_timeout: Duration,
    /// Connections handled at once, both proxies together; more are reset
    /// (transparent) or answered 503 (explicit).
    pub max_connections: usize,
    /// The explicit proxy's limit for reading a request's headers.
    pub header_timeout: Duration,
    /// The sandbox's own HTTP proxy, if its way out is one.
    pub upstream: ProxyEnv,
    pub copy_mode: CopyMode,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            connect_timeout: Duration::from_secs(10),
            sniff_timeout: Duration::from_millis(500),
            max_connections: 4096,
            header_timeout: Duration::from_secs(30),
            upstream: ProxyEnv::default(),
            copy_mode: CopyMode::Splice,
        }
    }
}

/// Counters since start, for status and doctor.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub accepted: AtomicU64,
    pub allowed: AtomicU64,
    pub denied: AtomicU64,
    pub failed: AtomicU64,
    pub over_limit: AtomicU64,
    pub bytes_up: AtomicU64,
    pub bytes_down: AtomicU64,
}

impl Counters {
    pub fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// A snapshot of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub accepted: u64,
    pub allowed: u64,
    pub denied: u64,
    /// Allowed, but the way out could not be opened.
    pub failed: u64,
    /// Turned away because `max_connections` were busy.
    pub over_limit: u64,
    /// Connections being handled now.
    pub active: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
}

/// How the transparent proxy learns a connection's destination.
pub(crate) type DestinationLookup =
    Arc<dyn Fn(&TcpStream, &SocketAddr) -> std::io::Result<SocketAddr> + Send + Sync>;

pub(crate) struct Shared {
    pub config: EngineConfig,
    pub destination: DestinationLookup,
    pub policy: Arc<dyn Policy>,
    pub slots: Arc<Semaphore>,
    pub counters: Counters,
}

/// The egress engine. Cheap to clone; every clone shares limits and counters.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
}

impl Engine {
    pub fn new(config: EngineConfig, policy: Arc<dyn Policy>) -> Engine {
        Self::with_destination_lookup(
            config,
            policy,
            Arc::new(crate::transparent::original_destination_at),
        )
    }

    /// An engine whose transparent proxy learns destinations through
    /// `lookup` instead of SO_ORIGINAL_DST (tests run without iptables).
    pub(crate) fn with_destination_lookup(
        config: EngineConfig,
        policy: Arc<dyn Policy>,
        lookup: DestinationLookup,
    ) -> Engine {
        let slots = Arc::new(Semaphore::new(config.max_connections.max(1)));
        Engine {
            shared: Arc::new(Shared {
                config,
                destination: lookup,
                policy,
                slots,
                counters: Counters::default(),
            }),
        }
    }

    /// An engine that allows everything.
    pub fn allow_all(config: EngineConfig) -> Engine {
        Engine::new(config, Arc::new(AllowAll))
    }

    pub fn config(&self) -> &EngineConfig {
        &self.shared.config
    }

    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            accepted: get(&c.accepted),
            allowed: get(&c.allowed),
            denied: get(&c.denied),
            failed: get(&c.failed),
            over_limit: get(&c.over_limit),
            active: (self.shared.config.max_connections.max(1)
                - self.shared.slots.available_permits()) as u64,
            bytes_up: get(&c.bytes_up),
            bytes_down: get(&c.bytes_down),
        }
    }

    /// Serve the transparent proxy on `listener` (one per address family:
    /// bind IPv6 listeners v6-only) until the returned future is dropped,
    /// which also ends its connections. `network` labels its decisions.
    pub async fn serve_transparent(&self, listener: TcpListener, network: Option<String>) {
        serve(self.shared.clone(), listener, network, Kind::Transparent).await
    }

    /// Serve the explicit HTTP/CONNECT proxy on `listener` until the
    /// returned future is dropped.
    pub async fn serve_explicit(&self, listener: TcpListener, network: Option<String>) {
        serve(self.shared.clone(), listener, network, Kind::Explicit).await
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Transparent,
    Explicit,
}

/// What a connection handler gets.
pub(crate) struct Conn {
    pub shared: Arc<Shared>,
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub network: Option<Arc<str>>,
    pub stop: CancellationToken,
    pub _slot: OwnedSemaphorePermit,
}

async fn serve(shared: Arc<Shared>, listener: TcpListener, network: Option<String>, kind: Kind) {
    let network: Option<Arc<str>> = network.map(Arc::from);
    let local = listener.local_addr().ok();
    let stop = CancellationToken::new();
    // Dropping this future (the daemon stopping the listener) cancels every
    // connection it started, tunnels included.
    let _stop_all = stop.clone().drop_guard();
    let mut tasks = JoinSet::new();
    tracing::info!(listener = ?local, network = network.as_deref(), kind = if kind == Kind::Transparent { "transparent" } else { "explicit" }, "egress proxy serving");
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, listener = ?local, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        Counters::bump(&shared.counters.accepted);
        let Ok(slot) = shared.slots.clone().try_acquire_owned() else {
            Counters::bump(&shared.counters.over_limit);
            tracing::warn!(source = %peer, limit = shared.config.max_connections, "egress connection limit reached; refusing");
            if kind == Kind::Transparent {
                relay::reset(&stream);
            } else {
                tasks.spawn(crate::explicit::busy(stream));
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = Conn {
            shared: shared.clone(),
            stream,
            peer,
            network: network.clone(),
            stop: stop.clone(),
            _slot: slot,
        };
        match kind {
            Kind::Transparent => tasks.spawn(crate::transparent::handle(conn)),
            Kind::Explicit => tasks.spawn(crate::explicit::handle(conn)),
        };
    }
}
