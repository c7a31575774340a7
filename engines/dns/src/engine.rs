//! The engine: one record table, one forwarder, any number of listeners.

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::config::{EngineConfig, Limits};
use crate::error::Result;
use crate::forward::Forwarder;
use crate::listener::{self, ListenerKind, ListenerSockets, NamespaceListener, SharedListener};
use crate::records::RecordTable;
use crate::respond::Responder;
use crate::scopes::ClientScopes;
use crate::threads::EngineThreads;

pub(crate) struct EngineInner {
    pub(crate) records: RecordTable,
    pub(crate) forwarder: Forwarder,
    pub(crate) config: EngineConfig,
    rotation: AtomicUsize,
    /// Waiting queries across all listeners.
    pub(crate) pending: Arc<Semaphore>,
}

impl EngineInner {
    pub(crate) fn responder(&self) -> Responder<'_> {
        Responder {
            records: &self.records,
            forwarder: &self.forwarder,
            ttl: self.config.local_ttl,
            rotation: &self.rotation,
        }
    }
}

/// conductor-net's DNS engine. Cheap to clone (all clones are the same
/// engine). It serves its listeners on threads of its own; dropping the
/// last clone stops them and closes every listener's sockets.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
    threads: Arc<EngineThreads>,
}

impl Engine {
    /// An engine forwarding to `config.upstreams`, with no records and no
    /// listeners.
    pub fn new(config: EngineConfig) -> Result<Self> {
        let forwarder = Forwarder::new(&config.upstreams, &config.forward)?;
        let threads = Arc::new(EngineThreads::start(config.threads)?);
        Ok(Self {
            threads,
            inner: Arc::new(EngineInner {
                records: RecordTable::default(),
                forwarder,
                pending: Arc::new(Semaphore::new(config.max_pending.max(1))),
                config,
                rotation: AtomicUsize::new(0),
            }),
        })
    }

    /// The record table every listener answers from; updates are visible to
    /// the next query.
    pub fn records(&self) -> &RecordTable {
        &self.inner.records
    }

    /// Replaces the upstream resolvers (the forwarding cache starts empty).
    pub fn set_upstreams(&self, upstreams: &[SocketAddr]) -> Result<()> {
        self.inner.forwarder.set_upstreams(upstreams)
    }

    /// The upstream resolvers in use.
    pub fn upstreams(&self) -> Vec<SocketAddr> {
        self.inner.forwarder.upstreams()
    }

    /// Serves one client namespace on sockets opened inside it (usually
    /// 127.0.0.11:53). `scopes: None` = not known yet: queries are held up
    /// to the hold timeout until [`NamespaceListener::set_scopes`].
    /// `limits: None` = the engine's defaults.
    pub fn add_namespace_listener(
        &self,
        sockets: ListenerSockets,
        scopes: Option<ClientScopes>,
        limits: Option<Limits>,
    ) -> Result<NamespaceListener> {
        let limits = limits.unwrap_or_else(|| self.inner.config.limits.clone());
        let core = listener::start(
            self.inner.clone(),
            self.threads.pick(),
            sockets,
            ListenerKind::Namespace(scopes),
            limits,
        )?;
        Ok(NamespaceListener { core })
    }

    /// Serves many clients on one socket pair (a bridge's gateway address),
    /// telling them apart by source address; see
    /// [`SharedListener::set_client`]. Unknown sources are held like
    /// queries on a namespace listener without scopes.
    pub fn add_shared_listener(
        &self,
        sockets: ListenerSockets,
        limits: Option<Limits>,
    ) -> Result<SharedListener> {
        let limits = limits.unwrap_or_else(|| self.inner.config.shared_limits.clone());
        let runtime = self.threads.pick();
        let core = listener::start(
            self.inner.clone(),
            runtime,
            sockets,
            ListenerKind::Shared,
            limits,
        )?;
        Ok(SharedListener { core })
    }
}

impl Engine {
    /// Runs one message through the request path (parse, local answer,
    /// policy) as a client seeing `client`, without sockets: the response,
    /// or `None` when there is nothing to send now (ignored, or it would
    /// be forwarded - nothing is sent upstream). For fuzzing and tests.
    #[doc(hidden)]
    pub fn answer_bytes(&self, raw: &[u8], client: &ClientScopes) -> Option<Vec<u8>> {
        use crate::respond::{self, Parsed, Step};
        use hickory_server::net::xfer::Protocol;
        let src = SocketAddr::from(([127, 0, 0, 1], 53000));
        match respond::parse(raw, src, Protocol::Udp) {
            Parsed::Query(request) => {
                match self
                    .inner
                    .responder()
                    .answer(request, client, src.ip(), Protocol::Udp)
                {
                    Step::Local(bytes) | Step::Refused(bytes) | Step::Cached(bytes) => Some(bytes),
                    Step::Forward(_) => None,
                }
            }
            Parsed::FormErr(bytes) => Some(bytes),
            Parsed::Ignore => None,
        }
    }
}
