//! The API's request and response bodies: the data half of the contract
//! (routes are in `routes`). Shared by the server, the client, `demo` and
//! `bench-api`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::model::{CniResult, Endpoint, EndpointState, Network, Target};

/// `POST /v1/networks`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateNetwork {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_subnet: Option<String>,
    /// Bridge name; derived from the network name when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    /// No egress: traffic stays on the bridge.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub internal: bool,
}

/// `POST /v1/networks/{name}/endpoints`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns_path: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// Interface name inside the namespace (default eth0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    /// Requested IPv4 address (default: the next free one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Add a default route via the gateway (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_route: Option<bool>,
}

impl AttachRequest {
    pub fn target(&self) -> Result<Target> {
        Target::from_parts(self.netns.clone(), self.netns_path.clone(), self.pid)
    }
}

/// `POST /v1/networks/{name}/detach`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetachRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns_path: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// Wait until the veth is deleted (default true). With false the answer
    /// comes once the detach is recorded; the deletion (an RCU grace period,
    /// ~20 ms) runs in the background, the address stays reserved until it
    /// is done, and a new attach of the same namespace waits for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<bool>,
}

impl DetachRequest {
    pub fn target(&self) -> Result<Target> {
        Target::from_parts(self.netns.clone(), self.netns_path.clone(), self.pid)
    }
}

/// A network with its endpoint count, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkView {
    #[serde(flatten)]
    pub network: Network,
    pub endpoints: usize,
}

/// An endpoint with its state and CNI-style result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointView {
    #[serde(flatten)]
    pub endpoint: Endpoint,
    pub state: EndpointState,
    pub result: CniResult,
}

/// Answer to an attach: `created` is false when the endpoint already existed
/// (an idempotent repeat).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachResponse {
    pub created: bool,
    pub endpoint: EndpointView,
}

/// Answer to a detach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetachResponse {
    /// False when there was nothing to detach.
    pub detached: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// True when the deletion is still running in the background.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pending: bool,
}

/// Answer to a network removal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveResponse {
    pub removed: String,
    pub detached: usize,
}

/// `GET /v1/status`: the daemon and a tree network -> bridge -> endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub pid: u32,
    pub uptime_secs: u64,
    pub state_dir: String,
    pub socket: String,
    pub environment: String,
    pub networks: Vec<StatusNetwork>,
    /// Bridges in this daemon's prefix that no network record uses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unmanaged_bridges: Vec<UnmanagedBridge>,
}

/// A bridge named in this daemon's prefix (`cn-`) that no network record
/// uses: a record deleted or set aside, or another program's bridge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnmanagedBridge {
    pub bridge: String,
    pub addresses: Vec<String>,
    /// Made by this daemon (it carries its mark): `network create` with
    /// the network's name adopts it.
    pub ours: bool,
    /// What to do about it.
    pub fix: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusNetwork {
    pub name: String,
    pub bridge: String,
    pub subnet: String,
    pub gateway: String,
    pub endpoints: Vec<StatusEndpoint>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusEndpoint {
    pub id: String,
    pub target: String,
    pub ifname: String,
    pub address: String,
    pub state: EndpointState,
}

/// `POST /v1/docker`: serve names and egress for a Docker daemon's
/// networks (what `docker up` asks for inside a sandbox).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerEngineRequest {
    /// The engine's name (`docker up` derives it from the socket path).
    pub name: String,
    /// Docker's API socket.
    pub socket: PathBuf,
    /// dockerd's exec root: its network namespaces are under `netns/`
    /// there, watched so a container's DNS is up before its first query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec_root: Option<PathBuf>,
    /// Serve names on 127.0.0.11:53 inside each container.
    #[serde(default)]
    pub dns: bool,
    /// Give Docker's bridge networks egress.
    #[serde(default)]
    pub egress: bool,
    /// Docker does the NAT itself (its iptables rules, a real kernel):
    /// enforce the egress policy of its networks in DOCKER-USER and
    /// through the DNS forwarder on each gateway.
    #[serde(default)]
    pub policy: bool,
}

/// A tracked Docker daemon and what netd does for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerEngineView {
    #[serde(flatten)]
    pub request: DockerEngineRequest,
    /// Connected to Docker's event stream right now.
    pub connected: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_version: Option<String>,
    /// The last error talking to Docker, if the connection is down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub networks: Vec<DockerNetworkView>,
    /// Containers with a DNS listener in their namespace.
    pub dns_listeners: usize,
}

/// One of Docker's networks, as netd serves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerNetworkView {
    pub id: String,
    pub name: String,
    pub driver: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    /// How its traffic leaves (`nat`, `proxy`, `none`), or why it does not.
    pub egress: String,
    /// Container names on it.
    pub containers: Vec<String>,
}

// Egress policies (issue 12).

/// `PUT /v1/policies/{network}`: the network's whole policy.
pub use crate::policy::PolicySpec as SetPolicy;
/// A network's policy and its decisions counted.
pub use crate::policy::PolicyView;

/// `POST /v1/policies/{network}/rules` and `.../rules/remove`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRules {
    pub rules: Vec<String>,
}

// Published ports (issue 12).

/// `POST /v1/ports`: publish `mapping` (`[HOST_ADDR:]HOST_PORT:PORT[/tcp|/udp]`)
/// to exactly one of a container, a netns endpoint or an endpoint id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    pub mapping: String,
}

impl PortRequest {
    pub fn spec(&self) -> Result<crate::ports::PortSpec> {
        use crate::ports::PortTarget;
        let target = match (&self.container, &self.netns, &self.endpoint) {
            (Some(c), None, None) => PortTarget::Container(c.clone()),
            (None, Some(n), None) => PortTarget::Netns(n.clone()),
            (None, None, Some(e)) => PortTarget::Endpoint(e.clone()),
            _ => {
                return Err(crate::error::Error::invalid(
                    "port target",
                    "",
                    "give exactly one of container, netns or endpoint",
                ))
            }
        };
        crate::ports::PortSpec::parse(&self.mapping, target)
    }
}

// --- Containers attached by label (issue 11) ---

/// A container labelled `conductor.network=NET` and what netd did for it:
/// `endpoint` and `address` when attached, `problem` when left alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelledContainer {
    /// The Docker engine (as `docker ls` names it).
    pub engine: String,
    pub id: String,
    pub name: String,
    pub network: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attach_request_refuses_unknown_fields() {
        let e = serde_json::from_str::<AttachRequest>(r#"{"netns":"a","colour":1}"#).unwrap_err();
        assert!(e.to_string().contains("colour"));
    }
}
