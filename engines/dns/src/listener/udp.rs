//! The UDP loop of a listener: answers what is known at once inline, and
//! hands slow queries (held, forwarded past the cache) to bounded tasks.
//!
//! Datagrams are read with `recvmmsg` into up to `udp_batch` buffers, and
//! the answers known at once go out with one `sendmmsg`. The buffers grow
//! only while batches come back full, so a quiet listener keeps one 4 KiB
//! buffer. Under load this costs the engine a fraction of a system call
//! per query; on a shared socket it also lets the engine drain faster than
//! one flooding client fills it, so the kernel does not drop the other
//! clients' queries from the shared receive queue.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::task::Poll;

use hickory_server::net::xfer::Protocol;
use nix::sys::socket::{
    recvmmsg, sendmmsg, ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage,
};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use super::{ListenerState, Outcome};
use crate::stats::bump;

/// Largest query read; longer datagrams are cut and answered FORMERR.
const RECV_BUF: usize = 4096;

struct Loop {
    state: Arc<ListenerState>,
    socket: Arc<UdpSocket>,
    waiting: JoinSet<()>,
    /// Answers ready to send, with their destinations.
    replies: Vec<(Vec<u8>, SocketAddr)>,
}

pub(super) async fn run(state: Arc<ListenerState>, socket: UdpSocket) {
    let max_batch = state.limits.udp_batch.max(1);
    let mut this = Loop {
        state,
        socket: Arc::new(socket),
        waiting: JoinSet::new(),
        replies: Vec::new(),
    };
    let mut bufs = vec![vec![0u8; RECV_BUF]];
    let mut received = Vec::new();
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
            this.serve(&bufs[i][..len], src);
        }
        this.flush().await;
        if received.len() == bufs.len() && bufs.len() < max_batch {
            // The batch came back full: more is queued than we read.
            let more = bufs.len().min(max_batch - bufs.len());
            bufs.extend((0..more).map(|_| vec![0u8; RECV_BUF]));
        }
        // A flood must not keep this thread from other listeners.
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

    fn serve(&mut self, raw: &[u8], src: SocketAddr) {
        let mut reply = match self.state.serve(raw, src, Protocol::Udp) {
            Outcome::Now(Some(reply)) => return self.replies.push((reply, src)),
            Outcome::Now(None) => return,
            Outcome::Later(reply) => reply,
        };
        // One poll here: a future that needs no waiting needs no task.
        let waker = std::task::Waker::noop();
        match reply
            .as_mut()
            .poll(&mut std::task::Context::from_waker(waker))
        {
            Poll::Ready(Some(bytes)) => self.replies.push((bytes, src)),
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

    /// Sends the ready answers: one `sendmmsg`, then one by one whatever it
    /// did not take.
    async fn flush(&mut self) {
        let mut sent = 0;
        if self.replies.len() > 1 {
            let fd = self.socket.as_raw_fd();
            let replies = &self.replies;
            sent = self
                .socket
                .try_io(Interest::WRITABLE, || send_batch(fd, replies))
                .unwrap_or(0);
        }
        for (bytes, dst) in self.replies.drain(..).skip(sent) {
            send(&self.socket, &bytes, dst).await;
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

/// One `sendmmsg` of `replies`; how many the kernel took.
fn send_batch(fd: i32, replies: &[(Vec<u8>, SocketAddr)]) -> io::Result<usize> {
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(replies.len(), None);
    let slices: Vec<[IoSlice<'_>; 1]> = replies.iter().map(|(b, _)| [IoSlice::new(b)]).collect();
    let addrs: Vec<Option<SockaddrStorage>> = replies
        .iter()
        .map(|(_, a)| Some(SockaddrStorage::from(*a)))
        .collect();
    let cmsgs: [ControlMessage<'_>; 0] = [];
    let sent = sendmmsg(
        fd,
        &mut headers,
        slices.iter(),
        &addrs,
        cmsgs,
        MsgFlags::MSG_DONTWAIT,
    )
    .map_err(io::Error::from)?;
    Ok(sent.count())
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
