//! What follows the service's networks and endpoints without being part of
//! it: names and egress for conductor networks (`crate::network_services`).
//! The service tells its observer after each change took effect in the
//! kernel, and once for everything after the start-up reconciliation.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use super::Service;
use crate::kernel::Kernel;
use crate::model::{Endpoint, EndpointState, Network};

pub type Done<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

pub trait NetworkObserver: Send + Sync + 'static {
    /// A network's bridge is up (created, adopted or found at start).
    fn network_up<'a>(&'a self, network: &'a Network) -> Done<'a>;
    /// A network is about to lose its bridge.
    fn network_down<'a>(&'a self, network: &'a Network) -> Done<'a>;
    /// An endpoint is attached (kept synchronous: an attach that returned
    /// has its name served).
    fn endpoint_up(&self, endpoint: &Endpoint, network: &Network);
    fn endpoint_down(&self, endpoint: &Endpoint);
    /// The resolver endpoints on `network` should use (CNI `dns`).
    fn nameserver(&self, network: &Network) -> Option<IpAddr>;
}

impl<K: Kernel> Service<K> {
    /// Set the observer (once) and tell it everything there is now.
    pub async fn set_observer(&self, observer: Arc<dyn NetworkObserver>) {
        if self.observer.set(observer.clone()).is_err() {
            tracing::warn!("a network observer is already set");
            return;
        }
        let of = observer.clone();
        self.reg().nameserver = Some(Arc::new(move |n: &Network| of.nameserver(n)));
        let (networks, endpoints) = {
            let reg = self.reg();
            let networks: Vec<Network> = reg
                .networks
                .values()
                .filter(|n| n.ready)
                .map(|n| n.network.clone())
                .collect();
            let endpoints: Vec<(Endpoint, Network)> = reg
                .endpoints
                .values()
                .filter(|e| e.state == EndpointState::Attached)
                .filter_map(|e| {
                    let net = reg.networks.get(&e.endpoint.network)?;
                    Some((e.endpoint.clone(), net.network.clone()))
                })
                .collect();
            (networks, endpoints)
        };
        for n in &networks {
            observer.network_up(n).await;
        }
        for (e, n) in &endpoints {
            observer.endpoint_up(e, n);
        }
    }

    pub(super) fn observer(&self) -> Option<&Arc<dyn NetworkObserver>> {
        self.observer.get()
    }

    pub(super) async fn observe_network_up(&self, network: &Network) {
        if let Some(o) = self.observer() {
            o.network_up(network).await;
        }
    }

    pub(super) fn observe_endpoint_up(&self, endpoint: &Endpoint, network: &Network) {
        if let Some(o) = self.observer() {
            o.endpoint_up(endpoint, network);
        }
    }

    pub(super) fn observe_endpoint_down(&self, endpoint: &Endpoint) {
        if let Some(o) = self.observer() {
            o.endpoint_down(endpoint);
        }
    }

    pub(super) async fn observe_network_down(&self, network: &Network) {
        if let Some(o) = self.observer() {
            o.network_down(network).await;
        }
    }
}
