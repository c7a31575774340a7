//! Published ports in userspace: `spec` (what a port is), `forward` (the
//! TCP/UDP forwarders, no policy), `manager` (the daemon's records, saved
//! and restored), `observer` (following Docker's containers), and `proxy`
//! (the `*.localhost` reverse proxy over the same names).

pub mod forward;
mod manager;
mod observer;
mod spec;

pub use manager::{ContainerAddr, EndpointAddresses, PortView, Ports};
pub use observer::PortsObserver;
pub use spec::{HostSide, PortSpec, PortTarget, Proto};

use std::net::IpAddr;

use crate::kernel::Kernel;
use crate::service::Service;

impl<K: Kernel> EndpointAddresses for Service<K> {
    fn address(&self, target: &PortTarget) -> Option<IpAddr> {
        match target {
            PortTarget::Netns(n) => self.endpoint_address(None, Some(n)),
            PortTarget::Endpoint(id) => self.endpoint_address(Some(id), None),
            PortTarget::Container(_) => None,
        }
    }

    fn netns_names(&self) -> Vec<String> {
        self.endpoints(None)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|e| match e.endpoint.target {
                crate::model::Target::Netns(n) => Some(n),
                _ => None,
            })
            .collect()
    }
}

impl Ports {
    /// The observer to register with the Docker integration.
    pub fn observer(&self) -> PortsObserver {
        PortsObserver(self.containers.clone())
    }
}

#[cfg(test)]
mod tests;
