//! Read-only views: endpoints and the status tree.
use super::Service;
use crate::api::types::{EndpointView, Status, StatusEndpoint, StatusNetwork};
use crate::error::{Error, Result};
use crate::kernel::Kernel;

impl<K: Kernel> Service<K> {
    pub fn endpoints(&self, network: Option<&str>) -> Result<Vec<EndpointView>> {
        let reg = self.reg();
        if let Some(n) = network {
            if !reg.networks.contains_key(n) {
                return Err(Error::not_found("network", n));
            }
        }
        Ok(reg
            .endpoints
            .values()
            .filter(|e| network.is_none_or(|n| e.endpoint.network == n))
            .filter_map(|e| reg.view(e))
            .collect())
    }

    /// The IPv4 address of an endpoint found by id or by the namespace name
    /// it was attached with (published ports ask per connection: no copy).
    pub fn endpoint_address(
        &self,
        id: Option<&str>,
        netns: Option<&str>,
    ) -> Option<std::net::IpAddr> {
        let reg = self.reg();
        let live = |e: &crate::model::Endpoint| !e.detaching;
        let found = match (id, netns) {
            (Some(id), _) => reg
                .endpoints
                .get(id)
                .map(|e| &e.endpoint)
                .filter(|e| live(e)),
            (None, Some(ns)) => reg
                .endpoints
                .values()
                .map(|e| &e.endpoint)
                .find(|e| live(e) && e.target == crate::model::Target::Netns(ns.to_string())),
            (None, None) => None,
        };
        found.map(|e| std::net::IpAddr::V4(e.ipv4.addr()))
    }

    pub fn endpoint(&self, id: &str) -> Result<EndpointView> {
        let reg = self.reg();
        reg.endpoints
            .get(id)
            .and_then(|e| reg.view(e))
            .ok_or_else(|| Error::not_found("endpoint", id))
    }

    pub fn status(&self) -> Status {
        let reg = self.reg();
        let networks = reg
            .networks
            .values()
            .map(|n| StatusNetwork {
                name: n.network.name.clone(),
                bridge: n.network.bridge.clone(),
                subnet: n.network.subnet.to_string(),
                gateway: n.network.gateway.to_string(),
                endpoints: reg
                    .endpoints
                    .values()
                    .filter(|e| e.endpoint.network == n.network.name)
                    .map(|e| StatusEndpoint {
                        id: e.endpoint.id.clone(),
                        target: e.endpoint.target.describe(),
                        ifname: e.endpoint.ifname.clone(),
                        address: e.endpoint.ipv4.to_string(),
                        state: e.state,
                    })
                    .collect(),
            })
            .collect();
        Status {
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            uptime_secs: self.started.elapsed().as_secs(),
            state_dir: self.config.state_dir.display().to_string(),
            socket: self.config.socket.display().to_string(),
            environment: self.kernel.environment(),
            networks,
            unmanaged_bridges: self
                .unmanaged
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}
