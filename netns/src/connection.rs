//! A netlink route socket driven by tokio that can send several requests in
//! one `sendmsg` and read their acknowledgements in bulk.
//!
//! netlink-proto (under rtnetlink's own handle) sends one message per
//! `sendmsg`. Inside gVisor one request/ack round trip costs ~1 ms, so an
//! endpoint built one request at a time costs several ms; batching is the
//! lever. Replies are matched by sequence number, and anything with a
//! sequence number we are not waiting for (such as the extra ACK gVisor sends
//! after a dump's NLMSG_DONE) is dropped.

use std::io;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket};
use nix::errno::Errno;
use tokio::io::unix::AsyncFd;

/// How many requests go into one `sendmsg` at most: the kernel queues every
/// ack into our receive buffer before `sendmsg` returns, and a full buffer
/// drops them (ENOBUFS).
const MAX_BATCH: usize = 64;
const RECV_BUF: usize = 64 * 1024;

/// One request of a batch.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub message: RouteNetlinkMessage,
    /// NLM_F_* flags besides NLM_F_REQUEST (which is always set).
    pub flags: u16,
}

impl Request {
    /// A request acknowledged with an NLMSG_ERROR (code 0 on success).
    pub fn ack(message: RouteNetlinkMessage, flags: u16) -> Self {
        Request {
            message,
            flags: flags | NLM_F_ACK,
        }
    }

    /// A dump, terminated by NLMSG_DONE.
    pub fn dump(message: RouteNetlinkMessage) -> Self {
        Request {
            message,
            flags: NLM_F_DUMP,
        }
    }
}

/// What one request produced: the messages the kernel sent back for it, or
/// the errno it failed with.
pub(crate) type Reply = std::result::Result<Vec<RouteNetlinkMessage>, Errno>;

/// Opens a blocking-mode netlink route socket in the calling thread's
/// namespace. Call it on a thread that entered the target namespace.
pub(crate) fn open_socket() -> io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.set_non_blocking(true)?;
    Ok(socket)
}

pub(crate) struct Connection {
    fd: AsyncFd<Socket>,
    next_seq: u32,
    send_buf: Vec<u8>,
    recv_buf: Vec<u8>,
}

struct Pending {
    seq: u32,
    done: bool,
    reply: Reply,
}

impl Connection {
    /// Register a socket with the current tokio runtime.
    pub fn new(socket: Socket) -> io::Result<Self> {
        // SAFETY: netlink_sys::Socket owns its fd, returns that same fd from
        // every as_raw_fd() call and closes it only when dropped, which
        // happens after the AsyncFd that owns it deregisters.
        let fd = unsafe { AsyncFd::register(socket) }.map_err(|e| e.into_parts().1)?;
        Ok(Connection {
            fd,
            next_seq: 1,
            send_buf: Vec::with_capacity(4096),
            recv_buf: vec![0; RECV_BUF],
        })
    }

    /// Send every request and collect one reply per request, in order. An
    /// error returned here is a socket failure; per-request failures are in
    /// the replies.
    pub async fn execute(&mut self, requests: &[Request]) -> io::Result<Vec<Reply>> {
        let mut replies = Vec::with_capacity(requests.len());
        for chunk in requests.chunks(MAX_BATCH) {
            replies.extend(self.execute_chunk(chunk).await?);
        }
        Ok(replies)
    }

    async fn execute_chunk(&mut self, requests: &[Request]) -> io::Result<Vec<Reply>> {
        self.send_buf.clear();
        let mut pending = Vec::with_capacity(requests.len());
        for request in requests {
            let seq = self.next_seq;
            self.next_seq = self.next_seq.wrapping_add(1).max(1);
            let mut header = NetlinkHeader::default();
            header.flags = NLM_F_REQUEST | request.flags;
            header.sequence_number = seq;
            let mut msg = NetlinkMessage::new(
                header,
                NetlinkPayload::InnerMessage(request.message.clone()),
            );
            msg.finalize();
            let start = self.send_buf.len();
            self.send_buf.resize(start + msg.buffer_len(), 0);
            msg.serialize(&mut self.send_buf[start..]);
            pending.push(Pending {
                seq,
                done: false,
                reply: Ok(Vec::new()),
            });
        }
        self.send_all().await?;
        let mut open = pending.len();
        while open > 0 {
            let len = self.recv().await?;
            open -= absorb(&self.recv_buf[..len], &mut pending);
        }
        Ok(pending.into_iter().map(|p| p.reply).collect())
    }

    async fn send_all(&mut self) -> io::Result<()> {
        loop {
            match self.fd.get_ref().send(&self.send_buf, 0) {
                Ok(n) if n == self.send_buf.len() => return Ok(()),
                Ok(n) => {
                    return Err(io::Error::other(format!(
                        "short netlink send: {n} of {} bytes",
                        self.send_buf.len()
                    )))
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.fd.writable().await?.clear_ready();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    async fn recv(&mut self) -> io::Result<usize> {
        loop {
            // The kernel answers synchronously inside sendmsg, so the reply
            // is usually already queued: try before waiting on the reactor.
            match self.fd.get_ref().recv(&mut &mut self.recv_buf[..], 0) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.fd.readable().await?.clear_ready();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// Feed one datagram's messages into the pending replies; returns how many
/// requests it completed. Messages for unknown sequence numbers are dropped.
fn absorb(mut buf: &[u8], pending: &mut [Pending]) -> usize {
    let mut completed = 0;
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < 16 || len > buf.len() {
            break;
        }
        let seq = u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]);
        let raw = &buf[..len];
        buf = &buf[align4(len).min(buf.len())..];
        let Some(p) = pending.iter_mut().find(|p| p.seq == seq && !p.done) else {
            continue;
        };
        match NetlinkMessage::<RouteNetlinkMessage>::deserialize(raw) {
            Ok(msg) => match msg.payload {
                NetlinkPayload::Error(err) => {
                    p.done = true;
                    if let Some(code) = err.code {
                        p.reply = Err(Errno::from_raw(-code.get()));
                    }
                }
                NetlinkPayload::Done(done) => {
                    p.done = true;
                    if done.code < 0 {
                        p.reply = Err(Errno::from_raw(-done.code));
                    }
                }
                NetlinkPayload::InnerMessage(inner) => {
                    if let Ok(v) = p.reply.as_mut() {
                        v.push(inner);
                    }
                }
                _ => {}
            },
            Err(e) => {
                // A reply we cannot decode (an attribute this crate does
                // not know how to parse): keep going, the ack still counts.
                tracing::debug!(seq, error = %e, "undecodable netlink reply skipped");
            }
        }
        if p.done {
            completed += 1;
        }
    }
    completed
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{DoneMessage, ErrorMessage};
    use std::num::NonZeroI32;

    fn emit(seq: u32, payload: NetlinkPayload<RouteNetlinkMessage>) -> Vec<u8> {
        let mut header = NetlinkHeader::default();
        header.sequence_number = seq;
        let mut msg = NetlinkMessage::new(header, payload);
        msg.finalize();
        let mut buf = vec![0; msg.buffer_len()];
        msg.serialize(&mut buf);
        buf
    }

    fn pending(seqs: &[u32]) -> Vec<Pending> {
        seqs.iter()
            .map(|&seq| Pending {
                seq,
                done: false,
                reply: Ok(Vec::new()),
            })
            .collect()
    }

    #[test]
    fn acks_and_errors_complete_their_requests_only() {
        let mut ok = ErrorMessage::default();
        ok.code = None;
        let mut eexist = ErrorMessage::default();
        eexist.code = NonZeroI32::new(-libc::EEXIST);
        let mut buf = emit(7, NetlinkPayload::Error(ok.clone()));
        buf.extend(emit(99, NetlinkPayload::Error(ok))); // stale: ignored
        buf.extend(emit(8, NetlinkPayload::Error(eexist)));
        let mut p = pending(&[7, 8]);
        assert_eq!(absorb(&buf, &mut p), 2);
        assert!(p[0].reply.is_ok());
        assert_eq!(p[1].reply, Err(Errno::EEXIST));
    }

    #[test]
    fn extra_ack_after_done_is_ignored() {
        let mut done = DoneMessage::default();
        done.code = 0;
        let mut buf = emit(3, NetlinkPayload::Done(done));
        buf.extend(emit(3, NetlinkPayload::Error(ErrorMessage::default())));
        let mut p = pending(&[3]);
        assert_eq!(absorb(&buf, &mut p), 1);
        assert!(p[0].reply.is_ok());
    }

    #[test]
    fn truncated_and_garbage_input_does_not_panic() {
        let mut p = pending(&[1]);
        for junk in [
            &[][..],
            &[0xff; 3],
            &[200, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0],
            &[16, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0],
        ] {
            let _ = absorb(junk, &mut p);
        }
    }
}
