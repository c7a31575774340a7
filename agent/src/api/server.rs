//! The API on a unix socket: HTTP/1.1 by hyper, one task per connection,
//! peers checked with SO_PEERCRED (root, or a member of the configured
//! group; anyone else gets 403 on every request).

use std::convert::Infallible;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener as StdUnixListener;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::UnixListener;

use super::{dispatch, Reply, BODY_LIMIT};
use crate::error::{Error, Result};
use crate::kernel::Kernel;
use crate::service::Service;

/// Who may use the socket besides root.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Access {
    pub group: Option<u32>,
    /// Permission bits of the socket file.
    pub socket_mode: u32,
}

/// Resolve a group given by name or number.
pub fn resolve_group(group: &str) -> Result<u32> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(Error::invalid("socket group", group, "no such group")),
        Err(e) => Err(Error::invalid("socket group", group, e.desc())),
    }
}

/// Bind the socket: create its directory, refuse if a daemon already
/// answers there, replace a stale socket file, and set mode and group.
pub fn bind(path: &Path, mode: u32, group: Option<u32>) -> Result<StdUnixListener> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() && !dir.exists() {
            std::fs::create_dir_all(dir).map_err(|e| Error::state("create", dir, e))?;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
        }
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(Error::Conflict(format!(
                "another conductor-netd is already listening on {}",
                path.display()
            )));
        }
        std::fs::remove_file(path).map_err(|e| Error::state("remove stale socket", path, e))?;
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

/// Supplementary groups of a process, from /proc/PID/status.
fn process_groups(pid: i32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Groups:").map(|g| g.to_string()))
        })
        .map(|g| {
            g.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Decide whether a peer may use the API.
///
/// gVisor (20240729) answers SO_PEERCRED on an accepted socket with the
/// *listener's* credentials (our own pid, uid and gid), so a peer that claims
/// to be this very process is not identified at all. Then only the socket
/// file's permissions stand between the peer and the API: that is accepted
/// when they admit nobody but the owner (root) and the group, refused when
/// "others" have access.
pub fn check_peer(uid: u32, gid: u32, pid: Option<i32>, access: Access) -> Result<(), String> {
    if pid == Some(std::process::id() as i32) {
        if access.socket_mode & 0o007 != 0 {
            return Err(format!(
                "cannot identify the peer: SO_PEERCRED reports this daemon's own credentials \
                 (gVisor), and the socket mode {:04o} lets others in; use a mode without \
                 access for others (e.g. 0660) to rely on the socket's permissions",
                access.socket_mode
            ));
        }
        warn_unidentified_once();
        return Ok(());
    }
    if uid == 0 {
        return Ok(());
    }
    if let Some(group) = access.group {
        if gid == group || pid.is_some_and(|p| process_groups(p).contains(&group)) {
            return Ok(());
        }
        return Err(format!(
            "uid {uid} is not allowed: only root and members of group {group} may use this socket"
        ));
    }
    Err(format!(
        "uid {uid} is not allowed: only root may use this socket"
    ))
}

fn warn_unidentified_once() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        tracing::warn!(
            "SO_PEERCRED reports this daemon's own credentials (gVisor): peers are \
             admitted by the socket file's permissions only"
        );
    });
}

fn to_response(reply: Reply) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(&reply.body).unwrap_or_default();
    Response::builder()
        .status(reply.status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

async fn handle<K: Kernel>(
    svc: Arc<Service<K>>,
    allowed: Arc<Result<(), String>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    if let Err(reason) = allowed.as_ref() {
        return Ok(to_response(Reply::error(&Error::Forbidden(reason.clone()))));
    }
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > BODY_LIMIT) {
        return Ok(to_response(Reply::error(&Error::TooLarge {
            limit: BODY_LIMIT,
        })));
    }
    let body = match Limited::new(req.into_body(), BODY_LIMIT).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let err = if e
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Error::TooLarge { limit: BODY_LIMIT }
            } else {
                Error::BadBody(format!("reading the body failed: {e}"))
            };
            return Ok(to_response(Reply::error(&err)));
        }
    };
    let reply = dispatch(&svc, &method, &path, &query, &body).await;
    tracing::debug!(%method, %path, status = reply.status, "request");
    Ok(to_response(reply))
}

/// Serve the API until `shutdown` resolves.
pub async fn serve<K: Kernel>(
    svc: Arc<Service<K>>,
    listener: StdUnixListener,
    access: Access,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let listener = UnixListener::from_std(listener)
        .map_err(|e| Error::Internal(format!("register the API socket: {e}")))?;
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            a = listener.accept() => a,
        };
        let (stream, _) = match accepted {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let allowed = match stream.peer_cred() {
            Ok(cred) => check_peer(cred.uid(), cred.gid(), cred.pid(), access),
            Err(e) => Err(format!("cannot identify the peer (SO_PEERCRED): {e}")),
        };
        if let Err(reason) = &allowed {
            tracing::warn!(%reason, "refusing API peer");
        }
        let allowed = Arc::new(allowed);
        let svc = svc.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req| handle(svc.clone(), allowed.clone(), req));
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers() {
        assert!(check_peer(0, 0, None, Access::default()).is_ok());
        let e = check_peer(1000, 1000, None, Access::default()).unwrap_err();
        assert!(e.contains("uid 1000"), "{e}");
        let g = Access {
            group: Some(1234),
            socket_mode: 0o660,
        };
        assert!(check_peer(1000, 1234, None, g).is_ok());
        assert!(check_peer(1000, 1000, None, g).is_err());
        // Supplementary groups of a live process are read from /proc.
        assert!(!process_groups(std::process::id() as i32).contains(&u32::MAX));
    }

    #[test]
    fn unidentified_peers_rely_on_the_socket_mode() {
        let me = Some(std::process::id() as i32);
        let closed = Access {
            group: None,
            socket_mode: 0o660,
        };
        assert!(check_peer(0, 0, me, closed).is_ok());
        let open = Access {
            group: None,
            socket_mode: 0o666,
        };
        let e = check_peer(0, 0, me, open).unwrap_err();
        assert!(e.contains("SO_PEERCRED") && e.contains("0666"), "{e}");
    }

    #[test]
    fn groups_by_name_or_number() {
        assert_eq!(resolve_group("0").unwrap(), 0);
        assert_eq!(resolve_group("root").unwrap(), 0);
        assert!(resolve_group("no-such-group-here").is_err());
    }
}
