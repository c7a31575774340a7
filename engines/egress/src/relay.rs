//! Copy a connection both ways until both sides are done. Each direction
//! moves data with splice(2) through a pipe (socket -> pipe -> socket, no
//! copy to user space) and falls back to a buffered copy where the kernel
//! refuses splice on these sockets (the refusal moves no data, so the
//! fallback loses nothing). A refusal is remembered for the process.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::fcntl::{fcntl, splice, FcntlArg, OFlag, SpliceFFlags};
use nix::sys::socket::{setsockopt, shutdown, sockopt, Shutdown};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Buffer size of the copy once a stream flows (fallback and Buffered).
const CHUNK: usize = 256 * 1024;
/// Pipe capacity asked for, and bytes per splice call. The default (64 KiB)
/// costs twice the splice calls per byte; inside gVisor, where every system
/// call is expensive, 1 MiB doubled single-stream throughput (bench-egress).
/// Pages are only held while data is in flight.
const PIPE_SIZE: usize = 1024 * 1024;

static SPLICE_REFUSED: AtomicBool = AtomicBool::new(false);

/// How the relay moves data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyMode {
    /// splice(2), falling back per direction where refused.
    Splice,
    /// read/write through a buffer.
    Buffered,
}

/// Whether splice has been refused in this process so far.
pub fn splice_refused() -> bool {
    SPLICE_REFUSED.load(Ordering::Relaxed)
}

/// Bytes moved each way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moved {
    /// client -> server
    pub up: u64,
    /// server -> client
    pub down: u64,
}

/// Relay between `client` and `server` until both directions reached EOF
/// (each EOF is passed on as a half-close) or one failed (then both are
/// reset).
pub async fn relay(client: &TcpStream, server: &TcpStream, mode: CopyMode) -> io::Result<Moved> {
    // The second direction to end needs no shutdown: closing both sockets
    // right after sends the FINs.
    let ended = AtomicBool::new(false);
    let result = tokio::try_join!(
        one_way(client, server, mode, &ended),
        one_way(server, client, mode, &ended)
    );
    match result {
        Ok((up, down)) => Ok(Moved { up, down }),
        Err(e) => {
            reset(client);
            reset(server);
            Err(e)
        }
    }
}

/// Make the close of this socket send a RST (SO_LINGER 0), so the peer sees
/// a failure rather than a clean end of stream.
pub fn reset(stream: &TcpStream) {
    let _ = setsockopt(
        stream,
        sockopt::Linger,
        &libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    );
}

/// The first reads of each direction go through a small buffer, so a short
/// exchange (a request and its answer) never pays for a pipe. A read that
/// fills it means a stream is flowing: from then on splice, or a larger
/// buffer.
const FIRST: usize = 16 * 1024;

async fn one_way(
    from: &TcpStream,
    to: &TcpStream,
    mode: CopyMode,
    ended: &AtomicBool,
) -> io::Result<u64> {
    let mut total: u64 = 0;
    let mut buf = vec![0u8; FIRST];
    loop {
        let n = from
            .async_io(Interest::READABLE, || from.try_read(&mut buf))
            .await?;
        if n == 0 {
            return finish(to, total, ended);
        }
        write_all(to, &buf[..n]).await?;
        total += n as u64;
        if n == buf.len() {
            break;
        }
    }
    if mode == CopyMode::Splice && !splice_refused() {
        match Pipe::new() {
            Ok(pipe) => match splice_loop(from, to, &pipe).await? {
                Spliced::Done(n) => return finish(to, total + n, ended),
                Spliced::Refused(n) => total += n,
            },
            Err(e) => tracing::debug!(error = %e, "no pipe for splice, copying through a buffer"),
        }
    }
    buf.resize(CHUNK, 0);
    total += buffered_loop(from, to, &mut buf).await?;
    finish(to, total, ended)
}

/// Pass the EOF on while the other direction is still running.
fn finish(to: &TcpStream, total: u64, ended: &AtomicBool) -> io::Result<u64> {
    if !ended.swap(true, Ordering::Relaxed) {
        let _ = shutdown(to.as_raw_fd(), Shutdown::Write);
    }
    Ok(total)
}

struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        // A larger pipe means fewer splice calls per byte; refusal is harmless.
        // Refused (pipe-max-size, pipe-user-pages-soft): the default works.
        let _ = fcntl(&write, FcntlArg::F_SETPIPE_SZ(PIPE_SIZE as i32));
        Ok(Pipe { read, write })
    }
}

enum Spliced {
    /// Reached EOF; bytes moved.
    Done(u64),
    /// splice was refused before any byte moved in this call; bytes moved
    /// before it.
    Refused(u64),
}

fn refusal(e: Errno) -> bool {
    matches!(e, Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP)
}

async fn splice_loop(from: &TcpStream, to: &TcpStream, pipe: &Pipe) -> io::Result<Spliced> {
    let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
    let mut total: u64 = 0;
    loop {
        let filled = from
            .async_io(Interest::READABLE, || {
                splice(
                    from.as_fd(),
                    None,
                    pipe.write.as_fd(),
                    None,
                    PIPE_SIZE,
                    flags,
                )
                .map_err(io::Error::from)
            })
            .await;
        let mut in_pipe = match filled {
            Ok(0) => return Ok(Spliced::Done(total)),
            Ok(n) => n,
            Err(e) if total == 0 && e.raw_os_error().map(Errno::from_raw).is_some_and(refusal) => {
                SPLICE_REFUSED.store(true, Ordering::Relaxed);
                tracing::info!(error = %e, "splice refused on TCP sockets here; copying through a buffer");
                return Ok(Spliced::Refused(total));
            }
            Err(e) => return Err(e),
        };
        while in_pipe > 0 {
            let n = to
                .async_io(Interest::WRITABLE, || {
                    splice(pipe.read.as_fd(), None, to.as_fd(), None, in_pipe, flags)
                        .map_err(io::Error::from)
                })
                .await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "splice into the socket moved nothing",
                ));
            }
            in_pipe -= n;
            total += n as u64;
        }
    }
}

/// Write all of `buf` to a socket shared by reference.
pub async fn write_all(to: &TcpStream, buf: &[u8]) -> io::Result<()> {
    let mut off = 0;
    while off < buf.len() {
        off += to
            .async_io(Interest::WRITABLE, || to.try_write(&buf[off..]))
            .await?;
    }
    Ok(())
}

async fn buffered_loop(from: &TcpStream, to: &TcpStream, buf: &mut [u8]) -> io::Result<u64> {
    let mut total: u64 = 0;
    loop {
        let n = from
            .async_io(Interest::READABLE, || from.try_read(buf))
            .await?;
        if n == 0 {
            return Ok(total);
        }
        write_all(to, &buf[..n]).await?;
        total += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let addr = listener.local_addr().unwrap();
        let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (a.unwrap(), b.unwrap().0)
    }

    async fn round_trip(mode: CopyMode) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        // client <-> (proxy_in, proxy_out) <-> server
        let (mut client, proxy_in) = pair(&l).await;
        let (proxy_out, mut server) = pair(&l).await;
        let relay = tokio::spawn(async move { relay(&proxy_in, &proxy_out, mode).await });
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let d2 = data.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&d2).await.unwrap();
            client.shutdown().await.unwrap(); // half-close
            let mut back = Vec::new();
            client.read_to_end(&mut back).await.unwrap();
            back
        });
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), data.len());
        assert!(got == data);
        server.write_all(b"reply after half-close").await.unwrap();
        drop(server);
        assert_eq!(writer.await.unwrap(), b"reply after half-close");
        let moved = relay.await.unwrap().unwrap();
        assert_eq!(moved.up, data.len() as u64);
        assert_eq!(moved.down, 22);
    }

    #[tokio::test]
    async fn splice_relays_both_ways_with_half_close() {
        round_trip(CopyMode::Splice).await;
    }

    #[tokio::test]
    async fn buffered_relays_both_ways_with_half_close() {
        round_trip(CopyMode::Buffered).await;
    }
}
