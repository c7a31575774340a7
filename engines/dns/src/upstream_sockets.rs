//! Upstream UDP sockets kept for reuse.
//!
//! hickory-resolver opens a fresh socket for every forwarded query (socket,
//! bind to a random port, register, deregister, close). Inside gVisor each
//! of those system calls is a trip through the sentry, and a cache miss cost
//! twice what dnsmasq pays (bench-dns, "forwarded, cold miss"). Like
//! dnsmasq's set of random sockets, a bounded set of sockets on
//! kernel-chosen ports is reused here:
//! - one query at a time per socket (a socket is taken, and given back when
//!   hickory drops it), so an answer is never read by the wrong query; a
//!   late answer to an earlier query on a reused socket fails hickory's
//!   id and question check and is dropped;
//! - a socket is retired after [`USES_PER_SOCKET`] queries, so source ports
//!   keep changing (with the 16-bit id, the entropy an off-path spoofer
//!   has to guess);
//! - idle sockets are kept as std sockets (not registered with any runtime),
//!   so a socket never outlives the reactor it is registered with; taking
//!   and giving back costs one epoll registration each.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use hickory_resolver::net::runtime::iocompat::AsyncIoTokioAsStd;
use hickory_resolver::net::runtime::{
    DnsUdpSocket, RuntimeProvider, TokioHandle, TokioRuntimeProvider, TokioTime,
};
use tokio::net::TcpStream;

/// Idle sockets kept per local address.
const MAX_IDLE: usize = 64;
/// Queries one socket carries before it is closed.
const USES_PER_SOCKET: u32 = 256;

#[derive(Default)]
struct Idle {
    sockets: Vec<(IpAddr, std::net::UdpSocket, u32)>,
}

/// The sockets waiting for their next query.
#[derive(Default)]
struct SocketPool {
    idle: Mutex<Idle>,
}

impl SocketPool {
    fn take(&self, ip: IpAddr) -> Option<(std::net::UdpSocket, u32)> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let at = idle
            .sockets
            .iter()
            .rposition(|(bound, _, _)| *bound == ip)?;
        let (_, socket, uses) = idle.sockets.swap_remove(at);
        Some((socket, uses))
    }

    fn give_back(&self, ip: IpAddr, socket: std::net::UdpSocket, uses: u32) {
        if uses >= USES_PER_SOCKET {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let same = idle.sockets.iter().filter(|(b, _, _)| *b == ip).count();
        if same < MAX_IDLE {
            idle.sockets.push((ip, socket, uses));
        }
    }

    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .sockets
            .len()
    }
}

/// hickory's tokio runtime, with UDP sockets from the pool.
#[derive(Clone, Default)]
pub(crate) struct PooledRuntime {
    tokio: TokioRuntimeProvider,
    pool: Arc<SocketPool>,
}

impl RuntimeProvider for PooledRuntime {
    type Handle = TokioHandle;
    type Timer = TokioTime;
    type Udp = PooledUdpSocket;
    type Tcp = AsyncIoTokioAsStd<TcpStream>;

    fn create_handle(&self) -> Self::Handle {
        self.tokio.create_handle()
    }

    fn connect_tcp(
        &self,
        server_addr: SocketAddr,
        bind_addr: Option<SocketAddr>,
        timeout: Option<Duration>,
    ) -> Pin<Box<dyn Send + Future<Output = io::Result<Self::Tcp>>>> {
        self.tokio.connect_tcp(server_addr, bind_addr, timeout)
    }

    /// hickory asks for a random port; a pooled socket has one the kernel
    /// chose (ephemeral range), which serves the same purpose.
    fn bind_udp(
        &self,
        local_addr: SocketAddr,
        _server_addr: SocketAddr,
    ) -> Pin<Box<dyn Send + Future<Output = io::Result<Self::Udp>>>> {
        let pool = self.pool.clone();
        Box::pin(async move { PooledUdpSocket::take(pool, local_addr.ip()) })
    }
}

/// A socket on loan from the pool; dropping it gives it back.
pub(crate) struct PooledUdpSocket {
    socket: Option<tokio::net::UdpSocket>,
    ip: IpAddr,
    uses: u32,
    pool: Arc<SocketPool>,
}

impl PooledUdpSocket {
    fn take(pool: Arc<SocketPool>, ip: IpAddr) -> io::Result<Self> {
        let (std_socket, uses) = match pool.take(ip) {
            Some(found) => found,
            None => {
                let socket = std::net::UdpSocket::bind(SocketAddr::new(ip, 0))?;
                socket.set_nonblocking(true)?;
                (socket, 0)
            }
        };
        let socket = tokio::net::UdpSocket::from_std(std_socket)?;
        Ok(Self {
            socket: Some(socket),
            ip,
            uses: uses + 1,
            pool,
        })
    }

    fn socket(&self) -> io::Result<&tokio::net::UdpSocket> {
        self.socket
            .as_ref()
            .ok_or_else(|| io::Error::other("pooled socket already given back"))
    }
}

impl Drop for PooledUdpSocket {
    fn drop(&mut self) {
        if let Some(socket) = self.socket.take() {
            // into_std deregisters it from this runtime's reactor.
            if let Ok(std_socket) = socket.into_std() {
                self.pool.give_back(self.ip, std_socket, self.uses);
            }
        }
    }
}

impl DnsUdpSocket for PooledUdpSocket {
    type Time = TokioTime;

    fn poll_recv_from(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<(usize, SocketAddr)>> {
        let socket = match self.socket() {
            Ok(socket) => socket,
            Err(e) => return Poll::Ready(Err(e)),
        };
        let mut read = tokio::io::ReadBuf::new(buf);
        match socket.poll_recv_from(cx, &mut read) {
            Poll::Ready(Ok(from)) => Poll::Ready(Ok((read.filled().len(), from))),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_send_to(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
        target: SocketAddr,
    ) -> Poll<io::Result<usize>> {
        match self.socket() {
            Ok(socket) => socket.poll_send_to(cx, buf, target),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn port(s: &PooledUdpSocket) -> u16 {
        s.socket().unwrap().local_addr().unwrap().port()
    }

    #[tokio::test]
    async fn a_socket_is_reused_after_it_is_dropped_and_lent_to_one_query_at_a_time() {
        let pool = Arc::new(SocketPool::default());
        let first = PooledUdpSocket::take(pool.clone(), LOOPBACK).unwrap();
        let second = PooledUdpSocket::take(pool.clone(), LOOPBACK).unwrap();
        assert_ne!(port(&first), port(&second), "in use at once: two sockets");
        let first_port = port(&first);
        drop(first);
        assert_eq!(pool.idle_count(), 1);
        let again = PooledUdpSocket::take(pool.clone(), LOOPBACK).unwrap();
        assert_eq!(port(&again), first_port);
        assert_eq!(pool.idle_count(), 0);
    }

    #[tokio::test]
    async fn a_socket_is_retired_after_its_uses() {
        let pool = Arc::new(SocketPool::default());
        let first_port = port(&PooledUdpSocket::take(pool.clone(), LOOPBACK).unwrap());
        for _ in 1..USES_PER_SOCKET {
            let s = PooledUdpSocket::take(pool.clone(), LOOPBACK).unwrap();
            assert_eq!(port(&s), first_port);
        }
        assert_eq!(pool.idle_count(), 0, "retired, not kept");
        let fresh = PooledUdpSocket::take(pool.clone(), LOOPBACK).unwrap();
        assert_ne!(port(&fresh), first_port);
    }

    #[tokio::test]
    async fn idle_sockets_are_bounded() {
        let pool = Arc::new(SocketPool::default());
        let held: Vec<_> = (0..MAX_IDLE + 5)
            .map(|_| PooledUdpSocket::take(pool.clone(), LOOPBACK).unwrap())
            .collect();
        drop(held);
        assert_eq!(pool.idle_count(), MAX_IDLE);
    }

    #[tokio::test]
    async fn an_answer_arrives_on_a_pooled_socket() {
        let pool = Arc::new(SocketPool::default());
        let server = tokio::net::UdpSocket::bind((LOOPBACK, 0)).await.unwrap();
        let server_addr = server.local_addr().unwrap();
        let client = PooledUdpSocket::take(pool, LOOPBACK).unwrap();
        client.send_to(b"ping", server_addr).await.unwrap();
        let mut buf = [0u8; 16];
        let (n, from) = server.recv_from(&mut buf).await.unwrap();
        server.send_to(&buf[..n], from).await.unwrap();
        let (n, _) = client.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"ping");
    }
}
