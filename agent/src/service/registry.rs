//! The service's in-memory view: networks with their address pools and
//! endpoints with their lifecycle state. Guarded by one mutex in `Service`;
//! nothing here awaits.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use crate::api::types::EndpointView;
use crate::ipam::AddressPool;
use crate::model::{Endpoint, EndpointState, Network, NsId};

pub(super) struct NetState {
    pub network: Network,
    pub v4: AddressPool,
    pub v6: Option<AddressPool>,
    /// False while the network is being created or removed.
    pub ready: bool,
}

pub(super) struct EpState {
    pub endpoint: Endpoint,
    pub state: EndpointState,
}

/// Which resolver a network's endpoints are told about (set with the
/// service's observer).
pub(super) type NameserverOf = Arc<dyn Fn(&Network) -> Option<IpAddr> + Send + Sync>;

#[derive(Default)]
pub(super) struct Registry {
    pub networks: BTreeMap<String, NetState>,
    pub endpoints: BTreeMap<String, EpState>,
    pub next_seq: u64,
    pub nameserver: Option<NameserverOf>,
}

impl Registry {
    pub(super) fn find(&self, network: &str, id: NsId) -> Option<&EpState> {
        self.endpoints
            .values()
            .find(|e| e.endpoint.network == network && e.endpoint.netns_id == id)
    }

    pub(super) fn count(&self, network: &str) -> usize {
        self.endpoints
            .values()
            .filter(|e| e.endpoint.network == network)
            .count()
    }

    pub(super) fn release(&mut self, ep: &Endpoint) {
        if let Some(net) = self.networks.get_mut(&ep.network) {
            net.v4.release(IpAddr::V4(ep.ipv4.addr()));
            if let (Some(pool), Some(v6)) = (net.v6.as_mut(), ep.ipv6) {
                pool.release(IpAddr::V6(v6.addr()));
            }
        }
    }

    pub(super) fn view(&self, e: &EpState) -> Option<EndpointView> {
        let net = self.networks.get(&e.endpoint.network)?;
        let mut result = e.endpoint.cni_result(&net.network);
        if let Some(ns) = self.nameserver.as_ref().and_then(|f| f(&net.network)) {
            result.dns.nameservers = vec![ns.to_string()];
        }
        Some(EndpointView {
            result,
            endpoint: e.endpoint.clone(),
            state: e.state,
        })
    }
}

/// What a start-up reconciliation did.
impl NetState {
    /// A network with fresh address pools (its gateway reserved).
    pub(super) fn new(network: Network, ready: bool) -> NetState {
        let v6 = match (network.ipv6_subnet, network.ipv6_gateway) {
            (Some(s), Some(g)) => Some(AddressPool::v6(s, g)),
            _ => None,
        };
        NetState {
            v4: AddressPool::v4(network.subnet, network.gateway),
            v6,
            network,
            ready,
        }
    }
}
