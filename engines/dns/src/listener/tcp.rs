//! The TCP side of a listener: a capped number of connections, each closed
//! when idle, answering its queries in order (RFC 7766 framing: a 2-byte
//! length before each message).

use std::net::SocketAddr;
use std::sync::Arc;

use hickory_server::net::xfer::Protocol;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::timeout;
use tracing::debug;

use super::{ListenerState, Outcome};
use crate::stats::bump;

pub(super) async fn run(state: Arc<ListenerState>, listener: TcpListener) {
    let slots = Arc::new(Semaphore::new(state.limits.tcp_max_connections.max(1)));
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            biased;
            () = state.cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        while connections.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors or an aborted handshake: keep serving,
                // but do not spin.
                debug!(%error, "TCP accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            bump(&state.counters.tcp_rejected);
            drop(stream);
            continue;
        };
        bump(&state.counters.tcp_accepted);
        connections.spawn(serve(state.clone(), stream, peer, slot));
    }
    connections.shutdown().await;
    debug!("TCP listener stopped");
}

async fn serve(
    state: Arc<ListenerState>,
    mut stream: TcpStream,
    peer: SocketAddr,
    _slot: OwnedSemaphorePermit,
) {
    let idle = state.limits.tcp_idle_timeout;
    let mut buf = Vec::new();
    loop {
        let Ok(Ok(len)) = timeout(idle, stream.read_u16()).await else {
            return;
        };
        buf.resize(usize::from(len), 0);
        if !matches!(timeout(idle, stream.read_exact(&mut buf)).await, Ok(Ok(_))) {
            return;
        }
        let reply = match state.serve(&buf, peer, Protocol::Tcp) {
            Outcome::Now(reply) => reply,
            Outcome::Later(reply) => reply.await,
        };
        // Nothing to answer (rate limited, or not a query): close, the
        // client will not get an answer on this connection anyway.
        let Some(reply) = reply else { return };
        let Ok(len) = u16::try_from(reply.len()) else {
            return;
        };
        let mut framed = Vec::with_capacity(reply.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&reply);
        if !matches!(timeout(idle, stream.write_all(&framed)).await, Ok(Ok(()))) {
            return;
        }
    }
}
