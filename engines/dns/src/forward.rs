//! Forwarding of names that are not local, through hickory-resolver.
//!
//! Why the resolver rather than hickory's bare client: it brings failover
//! and ordering across upstreams by observed latency, retry over TCP when an
//! answer is truncated, per-try timeouts, CNAME chains kept in the answer -
//! and it is what hickory-server's own forwarding zone uses. What it costs:
//! answers come back per (name, type) as records plus the negative SOA, not
//! as the upstream's raw message, so additional sections are not relayed (a
//! stub resolver inside a container does not use them).
//!
//! UDP sockets to the upstreams are reused ([`crate::upstream_sockets`]).
//! The resolver's own cache is off: answers are cached in front of it
//! ([`crate::cache`]), where a hit needs no future at all.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Instant;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{LowerName, Name, Record, RecordType};
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::Resolver;
use tracing::debug;

use crate::cache::{ForwardCache, Hit};
use crate::config::ForwardConfig;
use crate::error::{Error, Result};
use crate::upstream_sockets::PooledRuntime;

/// What forwarding produced.
#[derive(Debug)]
pub(crate) enum Forwarded {
    /// An answer to relay: records (NOERROR), or a negative answer
    /// (NXDOMAIN, or NOERROR without records) with the zone's SOA.
    Answer {
        rcode: ResponseCode,
        answers: Vec<Record>,
        authorities: Vec<Record>,
    },
    /// No usable answer in time: the client gets SERVFAIL.
    Failed(&'static str),
}

struct Upstream {
    resolver: Resolver<PooledRuntime>,
    addrs: Vec<SocketAddr>,
}

/// The engine's forwarder; upstreams can be replaced at runtime.
pub(crate) struct Forwarder {
    config: ForwardConfig,
    current: RwLock<Option<Arc<Upstream>>>,
    cache: Arc<ForwardCache>,
}

impl Forwarder {
    pub(crate) fn new(upstreams: &[SocketAddr], config: &ForwardConfig) -> Result<Self> {
        let forwarder = Self {
            config: config.clone(),
            current: RwLock::new(None),
            cache: Arc::new(ForwardCache::new(config.cache_size, config.max_ttl)),
        };
        forwarder.set_upstreams(upstreams)?;
        Ok(forwarder)
    }

    /// Replaces the upstreams (and starts with an empty cache).
    pub(crate) fn set_upstreams(&self, upstreams: &[SocketAddr]) -> Result<()> {
        let next = if upstreams.is_empty() {
            None
        } else {
            Some(Arc::new(self.build(upstreams)?))
        };
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = next;
        self.cache.clear();
        Ok(())
    }

    pub(crate) fn upstreams(&self) -> Vec<SocketAddr> {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        current
            .as_ref()
            .map(|u| u.addrs.clone())
            .unwrap_or_default()
    }

    fn build(&self, upstreams: &[SocketAddr]) -> Result<Upstream> {
        let servers = upstreams
            .iter()
            .map(|addr| {
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
            })
            .collect();
        let mut opts = ResolverOpts::default();
        opts.timeout = self.config.attempt_timeout;
        opts.attempts = self.config.attempts;
        opts.cache_size = 0;
        // Names arrive fully qualified from the client's own stub: no
        // search list, no /etc/hosts of the daemon's machine.
        opts.ndots = 0;
        opts.use_hosts_file = ResolveHosts::Never;
        opts.preserve_intermediates = true;
        opts.try_tcp_on_error = true;
        // Queries of many containers share the upstream connections.
        opts.max_active_requests = 1024;
        let resolver = Resolver::builder_with_config(
            ResolverConfig::from_name_servers(servers),
            PooledRuntime::default(),
        )
        .with_options(opts)
        .build()
        .map_err(|e| Error::Upstreams {
            upstreams: upstreams.to_vec(),
            reason: e.to_string(),
        })?;
        Ok(Upstream {
            resolver,
            addrs: upstreams.to_vec(),
        })
    }

    /// A cached answer to (name, type), if one is still valid.
    pub(crate) fn cached(&self, name: &LowerName, qtype: RecordType) -> Option<Hit> {
        self.cache.get(name, qtype, Instant::now())
    }

    /// Forwards one question and caches the answer; the future owns what
    /// it needs and never takes longer than the configured deadline.
    pub(crate) fn lookup(
        &self,
        name: Name,
        qtype: RecordType,
    ) -> impl Future<Output = Forwarded> + Send + 'static {
        let cache = self.cache.clone();
        let upstream = self
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let deadline = self.config.deadline;
        async move {
            let Some(upstream) = upstream else {
                return Forwarded::Failed("no upstream resolver");
            };
            let key = LowerName::new(&name);
            let lookup = upstream.resolver.lookup(name, qtype);
            let forwarded = match tokio::time::timeout(deadline, lookup).await {
                Err(_) => Forwarded::Failed("upstream deadline passed"),
                Ok(Ok(lookup)) => Forwarded::Answer {
                    rcode: ResponseCode::NoError,
                    answers: lookup.answers().to_vec(),
                    authorities: Vec::new(),
                },
                Ok(Err(error)) => negative(error),
            };
            if let Forwarded::Answer {
                rcode,
                answers,
                authorities,
            } = &forwarded
            {
                cache.insert(key, qtype, *rcode, answers, authorities, Instant::now());
            }
            forwarded
        }
    }
}

fn negative(error: NetError) -> Forwarded {
    match error {
        NetError::Dns(DnsError::NoRecordsFound(none))
            if matches!(
                none.response_code,
                ResponseCode::NoError | ResponseCode::NXDomain
            ) =>
        {
            Forwarded::Answer {
                rcode: none.response_code,
                answers: Vec::new(),
                authorities: none
                    .soa
                    .map(|soa| vec![soa.into_record_of_rdata()])
                    .unwrap_or_default(),
            }
        }
        other => {
            debug!(error = %other, "forwarding failed");
            Forwarded::Failed("upstream failed")
        }
    }
}
