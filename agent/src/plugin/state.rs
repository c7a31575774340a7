//! What the plugin must remember across restarts of netd (Docker asks a
//! driver about a network or an endpoint once, by its id): Docker's ids ->
//! conductor networks and endpoints, and the IPAM driver's pools and
//! addresses. One small JSON file in the state directory, replaced
//! atomically on every change.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub const FILE_NAME: &str = "docker-plugin.json";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginState {
    /// Docker network id -> the conductor network behind it.
    #[serde(default)]
    pub networks: BTreeMap<String, PluginNetwork>,
    /// Docker endpoint id -> its address and, once joined, its host veth.
    #[serde(default)]
    pub endpoints: BTreeMap<String, PluginEndpoint>,
    /// IPAM pool id (the subnet) -> the addresses handed out.
    #[serde(default)]
    pub pools: BTreeMap<String, PluginPool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginNetwork {
    pub name: String,
    /// Made for Docker (removed with it), not an existing one adopted.
    pub created: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginEndpoint {
    pub network_id: String,
    pub address: Ipv4Net,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ifname: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginPool {
    pub subnet: Ipv4Net,
    #[serde(default)]
    pub addresses: BTreeSet<Ipv4Addr>,
}

impl PluginState {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(FILE_NAME)
    }

    /// The saved state; empty when there is none. A damaged file is an
    /// error naming it (it is never silently replaced).
    pub async fn load(path: &Path) -> Result<PluginState> {
        match tokio::fs::read(path).await {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                Error::state(
                    "parse",
                    path,
                    std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(PluginState::default()),
            Err(e) => Err(Error::state("read", path, e)),
        }
    }

    pub async fn save(&self, path: &Path) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::Internal(format!("encode the plugin state: {e}")))?;
        let tmp = path.with_extension("json.tmp");
        tokio::fs::write(&tmp, bytes)
            .await
            .map_err(|e| Error::state("write", &tmp, e))?;
        tokio::fs::rename(&tmp, path)
            .await
            .map_err(|e| Error::state("replace", path, e))
    }

    /// The conductor network behind a Docker network id.
    pub fn network(&self, docker_id: &str) -> Result<&PluginNetwork> {
        self.networks.get(docker_id).ok_or_else(|| Error::NotFound {
            what: "docker network",
            name: docker_id.to_string(),
        })
    }
}
