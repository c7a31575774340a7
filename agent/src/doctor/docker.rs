//! Does a Docker daemon answer, and which one (through bollard, with the
//! API version negotiated, so 20.10 and 28 both answer)?

use std::path::PathBuf;
use std::time::Duration;

use super::{CheckId, Checks, Outcome};

/// Where Docker listens: DOCKER_HOST (unix:// only) or the default socket.
pub fn docker_socket() -> PathBuf {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"))
}

pub(super) async fn probe(c: &mut Checks) {
    probe_socket(c, &docker_socket()).await
}

async fn probe_socket(c: &mut Checks, socket: &std::path::Path) {
    if !socket.exists() {
        c.add(
            CheckId::Docker,
            Outcome::Fail,
            format!("no Docker socket at {} (set DOCKER_HOST)", socket.display()),
        );
        return;
    }
    let answer = tokio::time::timeout(Duration::from_secs(3), version(socket)).await;
    match answer {
        Ok(Ok((version, api))) => c.add(
            CheckId::Docker,
            Outcome::Ok,
            format!(
                "Docker at {} answers: version {version}, API {api}",
                socket.display()
            ),
        ),
        Ok(Err(e)) => c.add(
            CheckId::Docker,
            Outcome::Fail,
            format!("Docker at {} does not answer: {e}", socket.display()),
        ),
        Err(_) => c.add(
            CheckId::Docker,
            Outcome::Fail,
            format!("Docker at {} did not answer within 3 s", socket.display()),
        ),
    }
}

async fn version(socket: &std::path::Path) -> Result<(String, String), bollard::errors::Error> {
    let docker = bollard::Docker::connect_with_unix(
        &socket.to_string_lossy(),
        3,
        bollard::API_DEFAULT_VERSION,
    )?
    .negotiate_version()
    .await?;
    let v = docker.version().await?;
    Ok((
        v.version.unwrap_or_else(|| "?".into()),
        v.api_version.unwrap_or_else(|| "?".into()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failure names Docker and its socket, never conductor-netd.
    #[tokio::test]
    async fn failures_name_docker_and_its_socket() {
        let dir = std::env::temp_dir().join(format!("cnd-docker-probe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.sock");
        let mut c = Checks::default();
        probe_socket(&mut c, &missing).await;
        // Something that is not Docker answers on this one.
        let other = dir.join("other.sock");
        let listener = tokio::net::UnixListener::bind(&other).unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                drop(s);
            }
        });
        probe_socket(&mut c, &other).await;
        for (check, path) in c.0.iter().zip([&missing, &other]) {
            assert_eq!(check.outcome, Outcome::Fail);
            assert!(check.detail.contains("Docker"), "{}", check.detail);
            assert!(
                check.detail.contains(&path.display().to_string()),
                "{}",
                check.detail
            );
            assert!(!check.detail.contains("conductor-netd"), "{}", check.detail);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
