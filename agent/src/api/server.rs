//! The API on a unix socket: HTTP/1.1 by hyper, axum's router per
//! connection, peers checked with SO_PEERCRED before anything is read.
//!
//! One client must not be able to stop or exhaust the daemon: every
//! connection has a header time-out, a body time-out and an idle time-out;
//! connections are capped in total and per peer uid (root keeps a reserve
//! above the cap, and the longest idle connection makes room for a new
//! one: see `limits`); the caps fit the fd limit; refused peers get one 403
//! answer on a short leash and cannot pile up; the accept loop only
//! accepts (the peer check runs on the connection's own task), and stops
//! accepting while `UNCHECKED` accepted connections await that check, so
//! a burst waits in the kernel's backlog instead of in our fd table.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener as StdUnixListener;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::Method;
use axum::middleware::Next;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::error::ApiError;
use super::idle::IdleTimeout;
use super::limits::{Connections, Holder, InFlight};
use super::peer::{check_peer, Access, Grant};
use super::BodyTimeout;
use crate::error::{Error, Result};

pub use super::limits::Limits;

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

/// Accepted connections whose peer is not yet checked and placed. Without
/// this bound a burst of connects is accepted faster than the tasks run
/// (seen in gVisor: 2,000 refused connects briefly held ~250 fds).
const UNCHECKED: usize = 64;

/// The three routers a connection can get, by what its peer may do.
#[derive(Clone)]
struct Routers {
    full: Router,
    readonly: Router,
    refused: Router<Arc<String>>,
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
    let conns = Connections::new(limits);
    let graceful = GracefulShutdown::new();
    let routers = Routers {
        readonly: router.clone().layer(axum::middleware::from_fn(read_only)),
        full: router,
        refused: refusing_router(),
    };
    let mut accept_errors = Throttled::default();
    let unchecked = Arc::new(Semaphore::new(UNCHECKED));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = unchecked.clone().acquire_owned() => match p {
                Ok(p) => p,
                // Never closed; stop serving rather than spin if it were.
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, _)) => {
                tokio::spawn(connection(
                    stream,
                    permit,
                    access,
                    conns.clone(),
                    routers.clone(),
                    graceful.watcher(),
                ));
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning, and
                // say so once a second, not thousands of times.
                accept_errors.warn(&e);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
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

/// One connection: check the peer, take a place (or close), then serve
/// HTTP/1.1 with the time-outs until it ends, idles out or is evicted.
async fn connection(
    stream: UnixStream,
    unchecked: OwnedSemaphorePermit,
    access: Access,
    conns: Connections,
    routers: Routers,
    watcher: Watcher,
) {
    let (grant, uid) = match stream.peer_cred() {
        Ok(cred) => (
            check_peer(cred.uid(), cred.gid(), cred.pid(), access),
            cred.uid(),
        ),
        Err(e) => (
            Err(format!("cannot identify the peer (SO_PEERCRED): {e}")),
            u32::MAX,
        ),
    };
    let limits = conns.limits();
    let holder = match grant {
        Ok(_) => Holder::Uid(uid),
        Err(_) => Holder::Refused,
    };
    let admitted = conns.admit(holder);
    drop(unchecked);
    let Some(slot) = admitted else {
        tracing::debug!(
            ?holder,
            "connection caps reached, every connection busy: closing"
        );
        return;
    };
    let (app, header_timeout, idle_timeout) = match grant {
        Ok(Grant::Full) => (routers.full, limits.header_timeout, limits.idle_timeout),
        Ok(Grant::ReadOnly) => (routers.readonly, limits.header_timeout, limits.idle_timeout),
        Err(reason) => {
            REFUSALS.warn(&reason);
            let leash = limits.refused_timeout;
            (routers.refused.with_state(Arc::new(reason)), leash, leash)
        }
    };
    let state = slot.state.clone();
    let io = TokioIo::new(IdleTimeout::new(stream, idle_timeout, state.clone()));
    let body_timeout = BodyTimeout(limits.body_timeout);
    // A connection is idle only while no request of it is in
    // flight: a slow operation is not cut off by the idle time-out.
    let in_flight = state.clone();
    let app = app.layer(axum::middleware::from_fn(
        move |mut req: Request, next: Next| {
            let busy = InFlight::enter(in_flight.clone());
            req.extensions_mut().insert(body_timeout);
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
        .header_read_timeout(header_timeout)
        .keep_alive(holder != Holder::Refused);
    let conn = watcher.watch(builder.serve_connection(io, TowerToHyperService::new(app)));
    let _slot = slot;
    tokio::select! {
        ended = conn => if let Err(e) = ended {
            tracing::debug!(error = %e, "connection ended with an error");
        },
        // Evicted to make room: it had no request in flight.
        _ = state.evicted.cancelled() => {}
    }
}

/// Every request of a refused peer gets 403 with the reason.
fn refusing_router() -> Router<Arc<String>> {
    Router::new().fallback(
        |axum::extract::State(reason): axum::extract::State<Arc<String>>| async move {
            ApiError::Forbidden(reason.as_ref().clone())
        },
    )
}

/// Members of the read-only group may use GET (and HEAD) only.
async fn read_only(req: Request, next: Next) -> axum::response::Response {
    use axum::response::IntoResponse;
    if req.method() == Method::GET || req.method() == Method::HEAD {
        return next.run(req).await;
    }
    ApiError::Forbidden(format!(
        "{} {}: members of the read-only group may only read (GET)",
        req.method(),
        req.uri().path()
    ))
    .into_response()
}

/// A warning repeated at most once a second, with how many it stands for:
/// a flood of connections must not become a flood of log lines.
#[derive(Default)]
struct Throttled {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttled {
    /// Ok(repeated since the last one) when this one is to be logged.
    fn admit(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }

    fn warn(&mut self, e: &std::io::Error) {
        if let Some(repeated) = self.admit() {
            tracing::warn!(error = %e, repeated, "accept failed");
        }
    }
}

/// Refused peers, warned about at most once a second.
struct Refusals(std::sync::Mutex<Throttled>);

static REFUSALS: Refusals = Refusals(std::sync::Mutex::new(Throttled {
    last: None,
    suppressed: 0,
}));

impl Refusals {
    fn warn(&self, reason: &str) {
        let admitted = self.0.lock().unwrap_or_else(|p| p.into_inner()).admit();
        if let Some(repeated) = admitted {
            tracing::warn!(%reason, repeated, "refusing API peer");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
