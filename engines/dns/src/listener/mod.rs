//! Listeners: a UDP socket and optionally a TCP listener handed over by the
//! daemon, served until the listener is closed. Two kinds: one client
//! namespace (sockets opened inside it), or many clients on a shared
//! address told apart by source address.

mod sockets;
mod tcp;
mod udp;

pub use sockets::BindOptions;

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Instant;

use hickory_proto::op::ResponseCode;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::Request;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::config::Limits;
use crate::engine::EngineInner;
use crate::error::{Error, Result};
use crate::ratelimit::RateLimiter;
use crate::respond::{self, Parsed, Step};
use crate::scopes::ClientScopes;
use crate::stats::{bump, Counters, ListenerStats};

/// Sockets the daemon opened for a listener (bound, not necessarily
/// non-blocking). A socket keeps the network namespace it was created in,
/// so sockets opened on a thread inside a container's namespace serve that
/// container.
#[derive(Debug)]
pub struct ListenerSockets {
    /// The UDP socket (required).
    pub udp: std::net::UdpSocket,
    /// The TCP listener (optional; clients retry truncated answers on TCP).
    pub tcp: Option<std::net::TcpListener>,
}

pub(crate) enum ListenerKind {
    Namespace(Option<ClientScopes>),
    Shared,
}

enum Clients {
    /// Every query on the listener comes from one client.
    Single(RwLock<Option<ClientScopes>>),
    /// Clients by source address.
    BySource(RwLock<HashMap<IpAddr, ClientScopes>>),
}

impl Clients {
    fn view(&self, source: IpAddr) -> Option<ClientScopes> {
        match self {
            Clients::Single(c) => c.read().unwrap_or_else(PoisonError::into_inner).clone(),
            Clients::BySource(t) => t
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&source)
                .cloned(),
        }
    }
}

type Reply = Pin<Box<dyn Future<Output = Option<Vec<u8>>> + Send>>;

/// What serving one message gave.
pub(crate) enum Outcome {
    /// The response (or nothing to send).
    Now(Option<Vec<u8>>),
    /// The response when ready.
    Later(Reply),
}

/// Permits of a waiting query: one of the listener's, one of the engine's.
pub(crate) struct PendingPermit {
    _listener: OwnedSemaphorePermit,
    _engine: OwnedSemaphorePermit,
}

/// State shared by a listener's tasks and its handle.
pub(crate) struct ListenerState {
    engine: Arc<EngineInner>,
    clients: Clients,
    changed: watch::Sender<u64>,
    limiter: RateLimiter,
    pub(crate) limits: Limits,
    pending: Arc<Semaphore>,
    pub(crate) counters: Counters,
    pub(crate) cancel: CancellationToken,
}

impl ListenerState {
    fn notify(&self) {
        self.changed.send_modify(|generation| *generation += 1);
    }

    pub(crate) fn try_pending(&self) -> Option<PendingPermit> {
        let listener = self.pending.clone().try_acquire_owned().ok()?;
        let engine = self.engine.pending.clone().try_acquire_owned().ok()?;
        Some(PendingPermit {
            _listener: listener,
            _engine: engine,
        })
    }

    /// Serves one DNS message from `src`.
    pub(crate) fn serve(
        self: &Arc<Self>,
        raw: &[u8],
        src: SocketAddr,
        protocol: Protocol,
    ) -> Outcome {
        let source = src.ip().to_canonical();
        if !self.limiter.allow(source, Instant::now()) {
            bump(&self.counters.rate_limited);
            return Outcome::Now(None);
        }
        bump(&self.counters.queries);
        let request = match respond::parse(raw, src, protocol) {
            Parsed::Query(request) => request,
            Parsed::FormErr(bytes) => {
                bump(&self.counters.malformed);
                return Outcome::Now(Some(bytes));
            }
            Parsed::Ignore => {
                bump(&self.counters.ignored);
                return Outcome::Now(None);
            }
        };
        match self.clients.view(source) {
            Some(client) => self.step(request, &client, source, protocol),
            None => {
                bump(&self.counters.held);
                Outcome::Later(Box::pin(self.clone().hold(request, source, protocol)))
            }
        }
    }

    fn step(
        &self,
        request: Box<Request>,
        client: &ClientScopes,
        source: IpAddr,
        protocol: Protocol,
    ) -> Outcome {
        match self
            .engine
            .responder()
            .answer(request, client, source, protocol)
        {
            Step::Local(bytes) => {
                bump(&self.counters.local);
                Outcome::Now(Some(bytes))
            }
            Step::Refused(bytes) => {
                bump(&self.counters.refused);
                Outcome::Now(Some(bytes))
            }
            Step::Cached(bytes) => {
                bump(&self.counters.cached);
                Outcome::Now(Some(bytes))
            }
            Step::Forward(reply) => {
                bump(&self.counters.forwarded);
                Outcome::Later(Box::pin(async move { Some(reply.await) }))
            }
        }
    }

    /// Waits (bounded) until the client's scopes are known, then answers.
    async fn hold(
        self: Arc<Self>,
        request: Box<Request>,
        source: IpAddr,
        protocol: Protocol,
    ) -> Option<Vec<u8>> {
        // Subscribe before looking, so a change in between is not missed.
        let mut changes = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + self.engine.config.hold_timeout;
        loop {
            if let Some(client) = self.clients.view(source) {
                return match self.step(request, &client, source, protocol) {
                    Outcome::Now(bytes) => bytes,
                    Outcome::Later(reply) => reply.await,
                };
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => continue,
                _ => break,
            }
        }
        bump(&self.counters.hold_expired);
        debug!(%source, "scopes unknown after the hold timeout: SERVFAIL");
        Some(respond::encode(
            &request,
            protocol,
            ResponseCode::ServFail,
            &[],
            &[],
        ))
    }
}

/// What both listener kinds share: the tasks and their state.
pub(crate) struct ListenerCore {
    state: Arc<ListenerState>,
    tasks: Vec<JoinHandle<()>>,
    udp_addr: SocketAddr,
    tcp_addr: Option<SocketAddr>,
}

impl ListenerCore {
    async fn close(mut self) {
        self.state.cancel.cancel();
        for task in std::mem::take(&mut self.tasks) {
            // A task only ends by cancellation; a panic cannot have held a
            // socket beyond its unwinding.
            let _ = task.await;
        }
    }
}

impl Drop for ListenerCore {
    fn drop(&mut self) {
        self.state.cancel.cancel();
    }
}

fn socket_error(kind: &'static str, addr: Option<SocketAddr>, source: std::io::Error) -> Error {
    Error::Socket {
        kind,
        addr: addr.map_or_else(|| "(unbound)".to_string(), |a| a.to_string()),
        source,
    }
}

/// Best effort: a smaller buffer only means drops sooner under a flood.
fn set_recv_buffer(socket: &tokio::net::UdpSocket, size: usize) {
    use nix::sys::socket::{getsockopt, setsockopt, sockopt};
    if setsockopt(socket, sockopt::RcvBufForce, &size).is_err() {
        let _ = setsockopt(socket, sockopt::RcvBuf, &size);
    }
    debug!(asked = size, got = ?getsockopt(socket, sockopt::RcvBuf), "UDP receive buffer");
}

pub(crate) fn start(
    engine: Arc<EngineInner>,
    runtime: &tokio::runtime::Handle,
    sockets: ListenerSockets,
    kind: ListenerKind,
    limits: Limits,
) -> Result<ListenerCore> {
    // The sockets register with the reactor of the runtime that serves them.
    let _entered = runtime.enter();
    let udp_addr = sockets.udp.local_addr().ok();
    let udp = sockets
        .udp
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UdpSocket::from_std(sockets.udp))
        .map_err(|e| socket_error("UDP", udp_addr, e))?;
    let udp_addr = udp
        .local_addr()
        .map_err(|e| socket_error("UDP", udp_addr, e))?;
    if let Some(size) = limits.udp_recv_buffer {
        set_recv_buffer(&udp, size);
    }
    let tcp = match sockets.tcp {
        None => None,
        Some(listener) => {
            let addr = listener.local_addr().ok();
            let listener = listener
                .set_nonblocking(true)
                .and_then(|()| tokio::net::TcpListener::from_std(listener))
                .map_err(|e| socket_error("TCP", addr, e))?;
            Some(listener)
        }
    };
    let tcp_addr = tcp.as_ref().and_then(|l| l.local_addr().ok());

    let clients = match kind {
        ListenerKind::Namespace(scopes) => Clients::Single(RwLock::new(scopes)),
        ListenerKind::Shared => Clients::BySource(RwLock::new(HashMap::new())),
    };
    let state = Arc::new(ListenerState {
        engine,
        clients,
        changed: watch::Sender::new(0),
        limiter: RateLimiter::new(&limits, Instant::now()),
        pending: Arc::new(Semaphore::new(limits.max_pending.max(1))),
        limits,
        counters: Counters::default(),
        cancel: CancellationToken::new(),
    });
    let mut tasks = vec![runtime.spawn(udp::run(state.clone(), udp))];
    if let Some(listener) = tcp {
        tasks.push(runtime.spawn(tcp::run(state.clone(), listener)));
    }
    debug!(%udp_addr, ?tcp_addr, "listener started");
    Ok(ListenerCore {
        state,
        tasks,
        udp_addr,
        tcp_addr,
    })
}

/// A listener serving one client namespace. Dropping it stops serving
/// soon; [`NamespaceListener::close`] returns once its sockets are closed.
pub struct NamespaceListener {
    pub(crate) core: ListenerCore,
}

impl NamespaceListener {
    /// Sets the client's scopes (and policy), in place: the next query sees
    /// them, and held queries are answered now.
    pub fn set_scopes(&self, scopes: ClientScopes) {
        if let Clients::Single(c) = &self.core.state.clients {
            *c.write().unwrap_or_else(PoisonError::into_inner) = Some(scopes);
        }
        self.core.state.notify();
    }

    /// Forgets the scopes: queries are held again until the next
    /// [`set_scopes`](Self::set_scopes).
    pub fn clear_scopes(&self) {
        if let Clients::Single(c) = &self.core.state.clients {
            *c.write().unwrap_or_else(PoisonError::into_inner) = None;
        }
    }

    /// The UDP socket's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.core.udp_addr
    }

    /// The TCP listener's address, if there is one.
    pub fn tcp_local_addr(&self) -> Option<SocketAddr> {
        self.core.tcp_addr
    }

    /// Counters since the listener was added.
    pub fn stats(&self) -> ListenerStats {
        self.core.state.counters.snapshot()
    }

    /// Stops serving; when this returns, the sockets are closed (nothing of
    /// the engine keeps the namespace alive).
    pub async fn close(self) {
        self.core.close().await;
    }
}

/// A listener serving many clients on one address, by source address.
pub struct SharedListener {
    pub(crate) core: ListenerCore,
}

impl SharedListener {
    /// Adds or replaces the client at `addr`; visible to its next query, and
    /// its held queries are answered now.
    pub fn set_client(&self, addr: IpAddr, scopes: ClientScopes) {
        if let Clients::BySource(t) = &self.core.state.clients {
            t.write()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(addr.to_canonical(), scopes);
        }
        self.core.state.notify();
    }

    /// Removes the client at `addr`; `false` if it was not there.
    pub fn remove_client(&self, addr: IpAddr) -> bool {
        match &self.core.state.clients {
            Clients::BySource(t) => t
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&addr.to_canonical())
                .is_some(),
            Clients::Single(_) => false,
        }
    }

    /// The UDP socket's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.core.udp_addr
    }

    /// The TCP listener's address, if there is one.
    pub fn tcp_local_addr(&self) -> Option<SocketAddr> {
        self.core.tcp_addr
    }

    /// Counters since the listener was added.
    pub fn stats(&self) -> ListenerStats {
        self.core.state.counters.snapshot()
    }

    /// Stops serving; when this returns, the sockets are closed.
    pub async fn close(self) {
        self.core.close().await;
    }
}
