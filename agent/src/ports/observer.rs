//! Ports follow Docker's containers: the watchers report every running
//! container (at start-up too), and the address a published port forwards
//! to is looked up from here per connection.

use std::collections::HashMap;
use std::net::IpAddr;

use super::manager::{ContainerAddr, Containers};
use crate::api::types::DockerEngineRequest;
use crate::docker::model::{DockerContainer, DockerNetwork};
use crate::docker::{DockerObserver, Done as ObserverDone};

pub struct PortsObserver(pub Containers);

fn addr_of(c: &DockerContainer) -> ContainerAddr {
    // The first network's IPv4 address (BTreeMap: a stable choice), else
    // its IPv6 one.
    let ip = c
        .endpoints
        .values()
        .find_map(|e| e.ipv4.map(IpAddr::V4))
        .or_else(|| c.endpoints.values().find_map(|e| e.ipv6.map(IpAddr::V6)));
    ContainerAddr {
        id: c.id.clone(),
        ip,
        exposed: c.exposed_tcp.clone(),
        shares_network_of: c.shares_network_of.clone(),
    }
}

impl DockerObserver for PortsObserver {
    fn container_up<'a>(
        &'a self,
        _engine: &'a DockerEngineRequest,
        container: &'a DockerContainer,
        _old: Option<&'a DockerContainer>,
        _networks: &'a HashMap<String, DockerNetwork>,
    ) -> ObserverDone<'a> {
        let addr = addr_of(container);
        tracing::debug!(container = %container.name, ip = ?addr.ip, "ports: container up");
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(container.name.clone(), addr);
        Box::pin(async {})
    }

    fn container_down<'a>(
        &'a self,
        _engine: &'a DockerEngineRequest,
        container: &'a DockerContainer,
    ) -> ObserverDone<'a> {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&container.name);
        Box::pin(async {})
    }
}
