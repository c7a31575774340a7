//! Finding and reaching Docker the way the docker CLI does: DOCKER_HOST
//! (unix:// only), else /var/run/docker.sock; the API version negotiated
//! so Debian's 20.10 (1.41) and newer daemons both answer. A missing
//! socket and a permission problem are told apart before bollard sees them.

use std::io::ErrorKind;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use bollard::Docker;

use super::error::{Result, WorkerError};
use crate::docker::DEFAULT_SOCKET;

/// Seconds one Docker request may take.
const TIMEOUT_SECS: u64 = 120;

/// The socket named by `docker_host` (DOCKER_HOST's value), else the default.
pub fn socket_from(docker_host: Option<&str>) -> Result<PathBuf> {
    match docker_host.filter(|h| !h.is_empty()) {
        None => Ok(PathBuf::from(DEFAULT_SOCKET)),
        Some(h) => match h.strip_prefix("unix://") {
            Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
            _ => Err(WorkerError::DockerHost(h.to_string())),
        },
    }
}

/// A connected client: the socket checked, the version negotiated.
pub async fn connect(socket: &Path) -> Result<Docker> {
    check_socket(socket)?;
    let unreachable = |e: bollard::errors::Error| WorkerError::Unreachable {
        socket: socket.to_path_buf(),
        reason: e.to_string(),
    };
    Docker::connect_with_unix(
        &socket.to_string_lossy(),
        TIMEOUT_SECS,
        bollard::API_DEFAULT_VERSION,
    )
    .map_err(unreachable)?
    .negotiate_version()
    .await
    .map_err(unreachable)
}

/// A connected client for DOCKER_HOST.
pub async fn connect_env() -> Result<Docker> {
    let host = std::env::var("DOCKER_HOST").ok();
    connect(&socket_from(host.as_deref())?).await
}

fn check_socket(socket: &Path) -> Result<()> {
    // A short blocking connect on a local socket: it answers at once.
    match UnixStream::connect(socket) {
        Ok(_) => Ok(()),
        Err(e) => match e.kind() {
            ErrorKind::NotFound => Err(WorkerError::SocketMissing(socket.to_path_buf())),
            ErrorKind::PermissionDenied => Err(WorkerError::SocketPermission(socket.to_path_buf())),
            _ => Err(WorkerError::Unreachable {
                socket: socket.to_path_buf(),
                reason: e.to_string(),
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_host() {
        assert_eq!(socket_from(None).unwrap(), PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(
            socket_from(Some("")).unwrap(),
            PathBuf::from(DEFAULT_SOCKET)
        );
        assert_eq!(
            socket_from(Some("unix:///tmp/d.sock")).unwrap(),
            PathBuf::from("/tmp/d.sock")
        );
        let e = socket_from(Some("tcp://1.2.3.4:2375")).unwrap_err();
        assert!(e.to_string().contains("tcp://1.2.3.4:2375"));
        assert!(socket_from(Some("unix://")).is_err());
    }
}
