//! TCP: accept, connect to the upstream, relay both ways until both sides
//! are done, with the egress engine's relay: splice(2) through a pipe where
//! the kernel allows it (gVisor too), a buffered copy otherwise or when
//! asked (`CopyMode::Buffered`; bench-ports compares them).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use conductor_egress::relay::{self, CopyMode};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

use super::{Forwarder, SharedUpstream};

/// A target that does not answer does not hold a client for long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Bind `listen` now (so "in use" is the caller's error) and forward in
/// the background.
pub async fn bind_tcp(
    listen: SocketAddr,
    upstream: SharedUpstream,
    mode: CopyMode,
) -> io::Result<Forwarder> {
    let listener = match bind(listen, false) {
        Ok(l) => l,
        // A restarted netd finds its old connections in TIME_WAIT: that
        // needs SO_REUSEADDR. But gVisor lets two SO_REUSEADDR sockets
        // bind one port even while one listens, so a listener is looked
        // for first (a connect that is answered).
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            if someone_listens(listen).await {
                return Err(e);
            }
            bind(listen, true)?
        }
        Err(e) => return Err(e),
    };
    let local = listener.local_addr()?;
    let stop = CancellationToken::new();
    tokio::spawn(accept_loop(listener, upstream, mode, stop.clone()));
    Ok(Forwarder { stop, local })
}

fn bind(listen: SocketAddr, reuse: bool) -> io::Result<TcpListener> {
    let socket = if listen.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(reuse)?;
    socket.bind(listen)?;
    socket.listen(1024)
}

async fn someone_listens(listen: SocketAddr) -> bool {
    let mut probe = listen;
    if probe.ip().is_unspecified() {
        probe.set_ip(match listen {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    matches!(
        tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(probe)).await,
        Ok(Ok(_))
    )
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SharedUpstream,
    mode: CopyMode,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((client, peer)) => {
                let target = upstream.resolve();
                let stop = stop.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        r = forward(client, target, mode) => if let Err(e) = r {
                            tracing::debug!(%peer, ?target, error = %e, "forwarded connection ended");
                        }
                    }
                });
            }
            Err(e) => {
                // Out of fds and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn forward(client: TcpStream, target: Option<SocketAddr>, mode: CopyMode) -> io::Result<()> {
    let target = target.ok_or_else(|| io::Error::other("the target has no address now"))?;
    let server = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    relay::relay(&client, &server, mode).await?;
    Ok(())
}
