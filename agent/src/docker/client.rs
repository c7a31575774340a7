//! Talking to a Docker daemon through bollard: over its unix socket, with
//! the API version negotiated (Debian's 20.10 speaks 1.41, 28.5 speaks
//! 1.51), and errors that name Docker and the socket.

use std::collections::HashMap;
use std::path::Path;

use bollard::Docker;

use crate::error::{Error, Result};

/// Seconds bollard waits for an answer to one request.
const TIMEOUT_SECS: u64 = 120;

fn unreachable(socket: &Path, e: impl std::fmt::Display) -> Error {
    Error::Unreachable(format!("Docker at {}: {e}", socket.display()))
}

/// A client for the daemon on `socket`, its API version negotiated.
pub async fn connect(socket: &Path) -> Result<Docker> {
    let path = socket.to_string_lossy();
    Docker::connect_with_unix(&path, TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
        .map_err(|e| unreachable(socket, e))?
        .negotiate_version()
        .await
        .map_err(|e| unreachable(socket, e))
}

/// Does the daemon answer?
pub async fn ping(socket: &Path) -> Result<()> {
    if !socket.exists() {
        return Err(unreachable(socket, "no socket there"));
    }
    let docker = connect(socket).await?;
    docker
        .ping()
        .await
        .map(drop)
        .map_err(|e| unreachable(socket, e))
}

/// The bridge a Docker bridge network uses: its `bridge.name` option
/// (docker0 for the default network), else `br-` and the id's first 12
/// characters, as libnetwork names them.
pub fn bridge_of(id: &str, options: Option<&HashMap<String, String>>) -> String {
    options
        .and_then(|o| o.get("com.docker.network.bridge.name"))
        .cloned()
        .unwrap_or_else(|| format!("br-{}", id.chars().take(12).collect::<String>()))
}

/// The bridges of the daemon's bridge networks.
pub async fn bridge_names(socket: &Path) -> Result<Vec<String>> {
    let docker = connect(socket).await?;
    let networks = docker
        .list_networks(None::<bollard::query_parameters::ListNetworksOptions>)
        .await
        .map_err(|e| unreachable(socket, e))?;
    Ok(networks
        .iter()
        .filter(|n| n.driver.as_deref() == Some("bridge"))
        .filter_map(|n| Some(bridge_of(n.id.as_deref()?, n.options.as_ref())))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridges_are_named_like_libnetwork_does() {
        let mut o = HashMap::new();
        o.insert("com.docker.network.bridge.name".into(), "docker0".into());
        assert_eq!(bridge_of("abc", Some(&o)), "docker0");
        assert_eq!(bridge_of("0123456789abcdef", None), "br-0123456789ab");
    }
}
