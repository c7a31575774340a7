//! The UDP loop of a listener: answers what is known at once inline, and
//! hands slow queries (held, forwarded past the cache) to bounded tasks.
//!
//! A listener with `udp_batch > 1` (shared listeners) reads up to that
//! many datagrams per `recvmmsg`: one client flooding a shared socket then
//! costs the engine a fraction of a syscall per packet, so it drains the
//! socket faster than one sender can fill it and the kernel does not drop
//! the other clients' queries from the shared receive queue.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::task::Poll;

use hickory_server::net::xfer::Protocol;
use nix::sys::socket::{recvmmsg, MsgFlags, MultiHeaders, SockaddrStorage};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use super::{ListenerState, Outcome};
use crate::stats::bump;

/// Largest query read; longer datagrams are cut and answered FORMERR.
/// Bounded so a thousand listeners stay small.
const RECV_BUF: usize = 4096;

struct Loop {
    state: Arc<ListenerState>,
    socket: Arc<UdpSocket>,
    waiting: JoinSet<()>,
}

pub(super) async fn run(state: Arc<ListenerState>, socket: UdpSocket) {
    let batch = state.limits.udp_batch.max(1);
    let mut this = Loop {
        state,
        socket: Arc::new(socket),
        waiting: JoinSet::new(),
    };
    let mut bufs = vec![vec![0u8; RECV_BUF]; batch];
    let mut received = Vec::with_capacity(batch);
    loop {
        let ready = tokio::select! {
            biased;
            () = this.state.cancel.cancelled() => break,
            ready = this.receive(&mut bufs, &mut received) => ready,
        };
        while this.waiting.try_join_next().is_some() {}
        match ready {
            Ok(()) => {}
            Err(error) if transient(&error) => continue,
            Err(error) => {
                warn!(%error, "UDP listener socket failed; stopping it");
                break;
            }
        }
        for (i, &(len, src)) in received.iter().enumerate() {
            this.serve(&bufs[i][..len], src).await;
        }
        // A flood must not keep this worker from other listeners.
        tokio::task::consume_budget().await;
    }
    // Waiting tasks hold the socket: end them so it closes now.
    this.waiting.shutdown().await;
    debug!("UDP listener stopped");
}

impl Loop {
    /// Fills `received` with (length, source) of the datagrams now in
    /// `bufs[0..]`; at least one.
    async fn receive(
        &self,
        bufs: &mut [Vec<u8>],
        received: &mut Vec<(usize, SocketAddr)>,
    ) -> io::Result<()> {
        received.clear();
        if bufs.len() == 1 {
            received.push(self.socket.recv_from(&mut bufs[0]).await?);
            return Ok(());
        }
        loop {
            self.socket.readable().await?;
            let fd = self.socket.as_raw_fd();
            match self
                .socket
                .try_io(Interest::READABLE, || recv_batch(fd, bufs, received))
            {
                Ok(()) if !received.is_empty() => return Ok(()),
                Ok(()) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }

    async fn serve(&mut self, raw: &[u8], src: SocketAddr) {
        match self.state.serve(raw, src, Protocol::Udp) {
            Outcome::Now(Some(reply)) => send(&self.socket, &reply, src).await,
            Outcome::Now(None) => {}
            Outcome::Later(mut reply) => {
                // One poll here: a forwarded answer from the cache is ready
                // at once and needs no task.
                let first = std::future::poll_fn(|cx| Poll::Ready(reply.as_mut().poll(cx))).await;
                match first {
                    Poll::Ready(Some(bytes)) => send(&self.socket, &bytes, src).await,
                    Poll::Ready(None) => {}
                    Poll::Pending => {
                        let Some(permit) = self.state.try_pending() else {
                            bump(&self.state.counters.overloaded);
                            return;
                        };
                        let socket = self.socket.clone();
                        self.waiting.spawn(async move {
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
}

/// One `recvmmsg` into `bufs`. The headers are built per call: they hold
/// raw pointers, so they must not live across an await.
fn recv_batch(
    fd: i32,
    bufs: &mut [Vec<u8>],
    received: &mut Vec<(usize, SocketAddr)>,
) -> io::Result<()> {
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(bufs.len(), None);
    let mut slices: Vec<[IoSliceMut<'_>; 1]> =
        bufs.iter_mut().map(|b| [IoSliceMut::new(b)]).collect();
    let messages = recvmmsg(
        fd,
        &mut headers,
        slices.iter_mut(),
        MsgFlags::MSG_DONTWAIT,
        None,
    )
    .map_err(io::Error::from)?;
    for message in messages {
        let Some(src) = message.address.as_ref().and_then(to_std) else {
            continue;
        };
        received.push((message.bytes, src));
    }
    Ok(())
}

fn to_std(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    addr.as_sockaddr_in6()
        .map(|v6| SocketAddr::V6((*v6).into()))
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
