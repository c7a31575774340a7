//! A small authoritative server on loopback (hickory-server's `Server` with
//! an in-memory zone), standing in for the upstream resolver in tests and
//! in `bench-dns`. Counts the queries it answers. Not used by the daemon.

use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{LowerName, Name, RData, Record};
use hickory_server::net::runtime::{Time, TokioRuntimeProvider};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType};
use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};

/// TTL of the stub's records.
pub const STUB_TTL: u32 = 300;

struct Counting {
    catalog: Catalog,
    queries: Arc<AtomicU64>,
}

#[async_trait::async_trait]
impl RequestHandler for Counting {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response: R,
    ) -> ResponseInfo {
        self.queries.fetch_add(1, Ordering::Relaxed);
        self.catalog.handle_request::<R, T>(request, response).await
    }
}

/// A running stub upstream.
pub struct StubUpstream {
    addr: SocketAddr,
    queries: Arc<AtomicU64>,
    server: Server<Counting>,
}

impl StubUpstream {
    /// Serves zone `origin` (e.g. `fwd.test`) on 127.0.0.1 (UDP and TCP, one
    /// port) with an A record per `(label, address)` and, for every other
    /// name under `*.cold.<origin>`, 192.0.2.1 (a wildcard, so the benchmark
    /// can ask for names no cache has seen).
    pub async fn start(origin: &str, records: &[(&str, Ipv4Addr)]) -> std::io::Result<Self> {
        let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
        let origin = Name::from_str(&format!("{}.", origin.trim_end_matches('.')))
            .map_err(|e| invalid(e.to_string()))?;
        let name = |label: &str| -> std::io::Result<Name> {
            Name::from_str(label)
                .and_then(|n| n.append_domain(&origin))
                .map_err(|e| invalid(e.to_string()))
        };
        let mut zone = InMemoryZoneHandler::<TokioRuntimeProvider>::empty(
            origin.clone(),
            ZoneType::Primary,
            AxfrPolicy::Deny,
        );
        let soa = SOA::new(name("ns")?, name("hostmaster")?, 1, 3600, 600, 86400, 60);
        zone.upsert_mut(
            Record::from_rdata(origin.clone(), STUB_TTL, RData::SOA(soa)),
            1,
        );
        for (label, addr) in records {
            zone.upsert_mut(
                Record::from_rdata(name(label)?, STUB_TTL, RData::A(A(*addr))),
                1,
            );
        }
        zone.upsert_mut(
            Record::from_rdata(
                name("*.cold")?,
                STUB_TTL,
                RData::A(A(Ipv4Addr::new(192, 0, 2, 1))),
            ),
            1,
        );
        let mut catalog = Catalog::new();
        let handler: Arc<dyn ZoneHandler> = Arc::new(zone);
        catalog.upsert(LowerName::new(&origin), vec![handler]);

        let udp = UdpSocket::bind("127.0.0.1:0").await?;
        let addr = udp.local_addr()?;
        let tcp = TcpListener::bind(addr).await?;
        let queries = Arc::new(AtomicU64::new(0));
        let mut server = Server::new(Counting {
            catalog,
            queries: queries.clone(),
        });
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 64 * 1024);
        Ok(Self {
            addr,
            queries,
            server,
        })
    }

    /// Where it listens (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queries answered so far.
    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }

    /// Stops serving and closes the sockets.
    pub async fn stop(mut self) {
        // The stub's own shutdown error, if any, does not matter to callers.
        let _ = self.server.shutdown_gracefully().await;
    }
}
