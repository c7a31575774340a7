//! The UDP loop of a listener: answers what is known at once inline, and
//! hands slow queries (held, forwarded past the cache) to bounded tasks.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;

use hickory_server::net::xfer::Protocol;
use tokio::net::UdpSocket;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use super::{ListenerState, Outcome};
use crate::stats::bump;

/// Largest query read; longer datagrams are cut and answered FORMERR.
/// Bounded so a thousand listeners stay small.
const RECV_BUF: usize = 4096;

pub(super) async fn run(state: Arc<ListenerState>, socket: UdpSocket) {
    let socket = Arc::new(socket);
    let mut waiting = JoinSet::new();
    let mut buf = vec![0u8; RECV_BUF];
    loop {
        let received = tokio::select! {
            biased;
            () = state.cancel.cancelled() => break,
            received = socket.recv_from(&mut buf) => received,
        };
        while waiting.try_join_next().is_some() {}
        let (len, src) = match received {
            Ok(received) => received,
            Err(error) if transient(&error) => continue,
            Err(error) => {
                warn!(%error, "UDP listener socket failed; stopping it");
                break;
            }
        };
        match state.serve(&buf[..len], src, Protocol::Udp) {
            Outcome::Now(Some(reply)) => send(&socket, &reply, src).await,
            Outcome::Now(None) => {}
            Outcome::Later(mut reply) => {
                // One poll here: a forwarded answer from the cache is ready
                // at once and needs no task.
                let first = std::future::poll_fn(|cx| Poll::Ready(reply.as_mut().poll(cx))).await;
                match first {
                    Poll::Ready(Some(bytes)) => send(&socket, &bytes, src).await,
                    Poll::Ready(None) => {}
                    Poll::Pending => {
                        let Some(permit) = state.try_pending() else {
                            bump(&state.counters.overloaded);
                            continue;
                        };
                        let socket = socket.clone();
                        waiting.spawn(async move {
                            let _permit = permit;
                            if let Some(bytes) = reply.await {
                                send(&socket, &bytes, src).await;
                            }
                        });
                    }
                }
            }
        }
    }
    // Waiting tasks hold the socket: end them so it closes now.
    waiting.shutdown().await;
    debug!("UDP listener stopped");
}

async fn send(socket: &UdpSocket, bytes: &[u8], dst: SocketAddr) {
    if let Err(error) = socket.send_to(bytes, dst).await {
        debug!(%error, %dst, "cannot send an answer");
    }
}

/// Errors a UDP socket reports for an earlier send (ICMP unreachable from
/// a client that went away) or an interrupted call: keep serving.
fn transient(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
    )
}
