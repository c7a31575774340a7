//! The API on a unix socket: HTTP/1.1 by hyper, axum's router per
//! connection, peers checked with SO_PEERCRED before anything is read.
//!
//! One client must not be able to stop or exhaust the daemon: every
//! connection has a header time-out, a whole-request time-out and an idle
//! time-out; connections are capped in total and per peer uid (root keeps a
//! reserve above the cap); refused peers get one 403 answer on a short leash
//! and cannot pile up.

use std::collections::HashMap;
use std::future::Future;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener as StdUnixListener;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use super::error::ApiError;
use super::peer::{check_peer, Access};
use crate::error::{Error, Result};

/// Time-outs and caps of the API server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// From accepting (or the end of the previous answer) to a request's
    /// complete headers.
    pub header_timeout: Duration,
    /// A connection with no traffic at all for this long is closed.
    pub idle_timeout: Duration,
    /// Connections at once (root may exceed it by `root_reserve`).
    pub max_connections: usize,
    /// Connections at once of one non-root uid.
    pub max_per_uid: usize,
    pub root_reserve: usize,
    /// Refused peers being answered at once; more are closed at once.
    pub max_refused: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 512,
            max_per_uid: 64,
            root_reserve: 128,
            max_refused: 32,
        }
    }
}

/// Bind the socket: create its directory, refuse if a daemon already
/// answers there, replace a stale socket (never any other kind of file),
/// and set mode and group.
pub fn bind(path: &Path, mode: u32, group: Option<u32>) -> Result<StdUnixListener> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() && !dir.exists() {
            std::fs::create_dir_all(dir).map_err(|e| Error::state("create", dir, e))?;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(Error::Conflict(format!(
                    "another conductor-netd is already listening on {}",
                    path.display()
                )));
            }
            std::fs::remove_file(path).map_err(|e| Error::state("remove stale socket", path, e))?;
        }
        Ok(_) => {
            return Err(Error::invalid(
                "socket path",
                path.display(),
                "a file that is not a socket is there; conductor-netd removes only stale sockets",
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::state("inspect", path, e)),
    }
    // No window in which the socket is more open than asked for.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = StdUnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = bound.map_err(|e| Error::state("bind socket", path, e))?;
    if let Some(gid) = group {
        nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(gid))).map_err(|e| {
            Error::state(
                "chown socket",
                path,
                std::io::Error::from_raw_os_error(e as i32),
            )
        })?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::state("chmod socket", path, e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| Error::state("configure socket", path, e))?;
    Ok(listener)
}

/// Connections held, in total and per uid; a slot is given back on drop.
#[derive(Default)]
struct Slots {
    total: usize,
    refused: usize,
    per_uid: HashMap<u32, usize>,
}

struct Slot {
    slots: Arc<Mutex<Slots>>,
    uid: Option<u32>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut s = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        match self.uid {
            Some(uid) => {
                s.total -= 1;
                if let Some(n) = s.per_uid.get_mut(&uid) {
                    *n -= 1;
                    if *n == 0 {
                        s.per_uid.remove(&uid);
                    }
                }
            }
            None => s.refused -= 1,
        }
    }
}

fn take_slot(slots: &Arc<Mutex<Slots>>, uid: Option<u32>, limits: &Limits) -> Option<Slot> {
    let mut s = slots.lock().unwrap_or_else(|p| p.into_inner());
    match uid {
        None => {
            if s.refused >= limits.max_refused {
                return None;
            }
            s.refused += 1;
        }
        Some(0) => {
            if s.total >= limits.max_connections + limits.root_reserve {
                return None;
            }
            s.total += 1;
            *s.per_uid.entry(0).or_default() += 1;
        }
        Some(uid) => {
            let mine = s.per_uid.get(&uid).copied().unwrap_or(0);
            if s.total >= limits.max_connections || mine >= limits.max_per_uid {
                return None;
            }
            s.total += 1;
            *s.per_uid.entry(uid).or_default() += 1;
        }
    }
    Some(Slot {
        slots: slots.clone(),
        uid,
    })
}

/// Serve the API until `shutdown` is cancelled; then stop accepting and let
/// requests in flight finish (up to `drain`).
pub async fn serve(
    router: Router,
    listener: StdUnixListener,
    access: Access,
    limits: Limits,
    shutdown: CancellationToken,
    drain: Duration,
) -> Result<()> {
    let listener = UnixListener::from_std(listener)
        .map_err(|e| Error::Internal(format!("register the API socket: {e}")))?;
    let slots = Arc::new(Mutex::new(Slots::default()));
    let graceful = GracefulShutdown::new();
    let refused_router = refusing_router();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let (stream, _) = match accepted {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (allowed, uid) = match stream.peer_cred() {
            Ok(cred) => (
                check_peer(cred.uid(), cred.gid(), cred.pid(), access),
                cred.uid(),
            ),
            Err(e) => (
                Err(format!("cannot identify the peer (SO_PEERCRED): {e}")),
                u32::MAX,
            ),
        };
        let (app, slot, mut limits_here) = match allowed {
            Ok(()) => match take_slot(&slots, Some(uid), &limits) {
                Some(slot) => (router.clone(), slot, limits),
                None => {
                    tracing::debug!(uid, "connection cap reached; closing");
                    continue;
                }
            },
            Err(reason) => match take_slot(&slots, None, &limits) {
                Some(slot) => {
                    tracing::warn!(%reason, "refusing API peer");
                    (
                        refused_router.clone().with_state(Arc::new(reason)),
                        slot,
                        limits,
                    )
                }
                None => continue,
            },
        };
        if slot.uid.is_none() {
            limits_here.header_timeout = Duration::from_secs(2);
            limits_here.idle_timeout = Duration::from_secs(2);
        }
        let in_flight = Arc::new(AtomicUsize::new(0));
        let io = TokioIo::new(IdleTimeout::new(
            stream,
            limits_here.idle_timeout,
            in_flight.clone(),
        ));
        // A connection is idle only while no request of it is in flight: a
        // slow operation is not cut off by the idle time-out.
        let app = app.layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let busy = InFlight::enter(in_flight.clone());
                async move {
                    let resp = next.run(req).await;
                    drop(busy);
                    resp
                }
            },
        ));
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits_here.header_timeout)
            .keep_alive(slot.uid.is_some());
        let conn = builder.serve_connection(io, TowerToHyperService::new(app));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "requests still in flight after {} s; leaving them",
            drain.as_secs()
        );
    }
    Ok(())
}

/// Every request of a refused peer gets 403 with the reason.
fn refusing_router() -> Router<Arc<String>> {
    Router::new().fallback(
        |axum::extract::State(reason): axum::extract::State<Arc<String>>| async move {
            ApiError::Forbidden(reason.as_ref().clone())
        },
    )
}

/// Requests of one connection being answered; a guard per request.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(count: Arc<AtomicUsize>) -> InFlight {
        count.fetch_add(1, Ordering::SeqCst);
        InFlight(count)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A stream that fails with TimedOut once it has seen no traffic in either
/// direction, and had no request in flight, for `limit` (hyper has header
/// time-outs but no idle one).
struct IdleTimeout {
    inner: UnixStream,
    limit: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
    in_flight: Arc<AtomicUsize>,
}

impl IdleTimeout {
    fn new(inner: UnixStream, limit: Duration, in_flight: Arc<AtomicUsize>) -> Self {
        IdleTimeout {
            inner,
            limit,
            deadline: Box::pin(tokio::time::sleep(limit)),
            in_flight,
        }
    }

    fn touched(&mut self) {
        let next = tokio::time::Instant::now() + self.limit;
        self.deadline.as_mut().reset(next);
    }

    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        if self.deadline.as_mut().poll(cx).is_pending() {
            return false;
        }
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            self.touched();
            // Registers the new deadline with this task.
            let _ = self.deadline.as_mut().poll(cx);
            return false;
        }
        true
    }
}

fn idle_error() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "idle connection closed")
}

impl AsyncRead for IdleTimeout {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.touched();
                }
                Poll::Ready(r)
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(idle_error())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for IdleTimeout {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, data) {
            Poll::Ready(r) => {
                self.touched();
                Poll::Ready(r)
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(idle_error())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_uid_with_a_root_reserve() {
        let limits = Limits {
            max_connections: 2,
            max_per_uid: 1,
            root_reserve: 1,
            max_refused: 1,
            ..Limits::default()
        };
        let slots = Arc::new(Mutex::new(Slots::default()));
        let a = take_slot(&slots, Some(1000), &limits).unwrap();
        assert!(take_slot(&slots, Some(1000), &limits).is_none(), "per uid");
        let b = take_slot(&slots, Some(1001), &limits).unwrap();
        assert!(take_slot(&slots, Some(1002), &limits).is_none(), "total");
        let root = take_slot(&slots, Some(0), &limits).unwrap();
        assert!(
            take_slot(&slots, Some(0), &limits).is_none(),
            "reserve used"
        );
        let refused = take_slot(&slots, None, &limits).unwrap();
        assert!(take_slot(&slots, None, &limits).is_none());
        drop((a, b, root, refused));
        let s = slots.lock().unwrap();
        assert_eq!((s.total, s.refused, s.per_uid.len()), (0, 0, 0));
    }

    #[test]
    fn only_stale_sockets_are_replaced() {
        let dir = std::env::temp_dir().join(format!("cnd-bind-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("regular");
        std::fs::write(&file, b"keep me").unwrap();
        let e = bind(&file, 0o600, None).unwrap_err();
        assert!(e.to_string().contains("regular"), "{e}");
        assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
        let sock = dir.join("sock");
        drop(StdUnixListener::bind(&sock).unwrap());
        bind(&sock, 0o600, None).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
