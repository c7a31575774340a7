//! The `*.localhost` reverse proxy: one listener routing
//! `<port>.<name>.localhost` and `<name>.localhost` to the container,
//! worker or namespace endpoint called `<name>` (names and addresses from
//! `ports`). HTTP/1.1 and h2c in, HTTP/1.1 out (pooled); WebSocket and
//! other upgrades spliced through; bodies streamed both ways. `route`
//! decides where, `forward` carries the request.

mod forward;
mod route;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::ports::Ports;

/// Headers must arrive within this: a slow client holds one connection
/// slot, no more.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Request head (HTTP/1.1 read buffer) and HTTP/2 header list bound.
const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Connections at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 4096;

pub struct LocalhostProxy {
    listener: TcpListener,
    local: SocketAddr,
    forward: Arc<forward::Forward>,
}

impl LocalhostProxy {
    /// Bind now (so a taken address is a start-up error naming it).
    pub fn bind(addr: SocketAddr, ports: Arc<Ports>) -> Result<LocalhostProxy> {
        let std_listener = std::net::TcpListener::bind(addr).map_err(|e| match e.kind() {
            std::io::ErrorKind::AddrInUse => {
                Error::Conflict(format!("localhost_proxy address {addr} is in use"))
            }
            _ => Error::Internal(format!("localhost_proxy: bind {addr}: {e}")),
        })?;
        std_listener
            .set_nonblocking(true)
            .map_err(|e| Error::Internal(format!("localhost_proxy: {e}")))?;
        let listener = TcpListener::from_std(std_listener)
            .map_err(|e| Error::Internal(format!("localhost_proxy: {e}")))?;
        let local = listener
            .local_addr()
            .map_err(|e| Error::Internal(format!("localhost_proxy: {e}")))?;
        Ok(LocalhostProxy {
            listener,
            local,
            forward: Arc::new(forward::Forward::new(ports, local)),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The component: accept until `stop`.
    pub async fn serve(self, stop: CancellationToken) -> Result<()> {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let permit = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                p = slots.clone().acquire_owned() => p.map_err(|e| Error::Internal(e.to_string()))?,
            };
            let (stream, peer) = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                a = self.listener.accept() => match a {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "localhost proxy: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let forward = self.forward.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let service = hyper::service::service_fn(move |req| {
                    let forward = forward.clone();
                    async move { Ok::<_, std::convert::Infallible>(forward.handle(req, peer).await) }
                });
                let mut builder =
                    hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                builder
                    .http1()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .max_buf_size(MAX_HEADER_BYTES);
                builder
                    .http2()
                    .timer(TokioTimer::new())
                    .max_header_list_size(MAX_HEADER_BYTES as u32);
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                tokio::pin!(conn);
                tokio::select! {
                    r = conn.as_mut() => if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "localhost proxy connection");
                    },
                    _ = stop.cancelled() => {}
                }
            });
        }
    }
}
