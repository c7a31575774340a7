//! UDP: one flow per client address, each with its own connected socket
//! towards the upstream (so replies find their client), closed after
//! `UDP_IDLE` without traffic. At most `MAX_FLOWS` flows: a flood of
//! source addresses cannot take every fd. The target is looked up per
//! datagram: a flow whose target moved (a restarted container) is replaced.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::{Forwarder, SharedUpstream};

pub const UDP_IDLE: Duration = Duration::from_secs(60);
const MAX_FLOWS: usize = 4096;
const DATAGRAM: usize = 65536;

/// A flow: its socket towards the upstream and the upstream it went to.
type Flow = (Arc<UdpSocket>, SocketAddr);
type Flows = Arc<Mutex<HashMap<SocketAddr, Flow>>>;

pub fn bind_udp(listen: SocketAddr, upstream: SharedUpstream) -> io::Result<Forwarder> {
    let std_socket = std::net::UdpSocket::bind(listen)?;
    std_socket.set_nonblocking(true)?;
    let socket = Arc::new(UdpSocket::from_std(std_socket)?);
    let local = socket.local_addr()?;
    let stop = CancellationToken::new();
    tokio::spawn(serve(socket, upstream, stop.clone(), UDP_IDLE));
    Ok(Forwarder { stop, local })
}

async fn serve(
    socket: Arc<UdpSocket>,
    upstream: SharedUpstream,
    stop: CancellationToken,
    idle: Duration,
) {
    let flows: Flows = Arc::default();
    let mut buf = vec![0u8; DATAGRAM];
    loop {
        let (n, client) = tokio::select! {
            _ = stop.cancelled() => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "udp receive");
                    continue;
                }
            },
        };
        let Some(target) = upstream.resolve() else {
            continue;
        };
        let existing = flows
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&client)
            .cloned();
        let flow = match existing {
            Some((f, went_to)) if went_to == target => f,
            _ => match open_flow(&socket, &flows, client, target, &stop, idle).await {
                Some(f) => f,
                None => continue,
            },
        };
        let _ = flow.send(&buf[..n]).await;
    }
}

/// A new flow's socket, connected to the upstream, and its reply task.
async fn open_flow(
    listener: &Arc<UdpSocket>,
    flows: &Flows,
    client: SocketAddr,
    target: SocketAddr,
    stop: &CancellationToken,
    idle: Duration,
) -> Option<Arc<UdpSocket>> {
    let full = {
        let mut table = flows.lock().unwrap_or_else(|p| p.into_inner());
        // A replaced flow's reply task ends on its own (idle time-out) and
        // removes only its own entry.
        table.remove(&client);
        table.len() >= MAX_FLOWS
    };
    if full {
        tracing::debug!(%client, "udp flow table full; datagram dropped");
        return None;
    }
    let bind: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0".parse().ok()?
    } else {
        "[::]:0".parse().ok()?
    };
    let out = UdpSocket::bind(bind).await.ok()?;
    out.connect(target).await.ok()?;
    let out = Arc::new(out);
    flows
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(client, (out.clone(), target));
    let (listener, flows, replies, stop) =
        (listener.clone(), flows.clone(), out.clone(), stop.clone());
    tokio::spawn(async move {
        let mut buf = vec![0u8; DATAGRAM];
        loop {
            // Idle counts from the last reply; a client that only sends
            // keeps its flow until then too (the usual NAT behaviour).
            let got = tokio::select! {
                _ = stop.cancelled() => break,
                r = tokio::time::timeout(idle, replies.recv(&mut buf)) => r,
            };
            match got {
                Ok(Ok(n)) => {
                    let _ = listener.send_to(&buf[..n], client).await;
                }
                // ICMP unreachable from a target not listening yet: keep
                // the flow, the next datagram may find it.
                Ok(Err(_)) => continue,
                Err(_) => break,
            }
        }
        let mut table = flows.lock().unwrap_or_else(|p| p.into_inner());
        if table
            .get(&client)
            .is_some_and(|(s, _)| Arc::ptr_eq(s, &replies))
        {
            table.remove(&client);
        }
    });
    Some(out)
}
