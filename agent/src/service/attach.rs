//! Attach: reserve an address and persist the endpoint, then create it in
//! the kernel; idempotent for the same target, rolled back on failure.
use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::registry::EpState;
use super::Service;
use crate::api::types::{AttachRequest, AttachResponse};
use crate::error::{Error, Result};
use crate::kernel::{EndpointPlan, Kernel};
use crate::model::{self, Endpoint, EndpointState, Network, NsId};

impl<K: Kernel> Service<K> {
    pub async fn attach(&self, network: &str, req: AttachRequest) -> Result<AttachResponse> {
        let target = req.target()?;
        let ifname = req.ifname.clone().unwrap_or_else(|| "eth0".to_string());
        model::validate_ifname("interface name", &ifname)?;
        let requested_ip: Option<Ipv4Addr> = match &req.ip {
            Some(text) => Some(text.trim().parse().map_err(|_| {
                Error::invalid("address", text, "not an IPv4 address such as 10.89.0.7")
            })?),
            None => None,
        };
        let default_route = req.default_route.unwrap_or(true);
        {
            let reg = self.reg();
            match reg.networks.get(network) {
                None => return Err(Error::not_found("network", network)),
                Some(n) if !n.ready => {
                    return Err(Error::Conflict(format!(
                        "network {network:?} is being created or removed"
                    )))
                }
                Some(_) => {}
            }
        }
        let (ns, ns_id) = self.kernel.open(&target).await?;
        if ns_id == self.kernel.own_namespace() && !self.config.allow_host_namespace {
            return Err(Error::Permission(format!(
                "{} is the daemon's own network namespace: attaching it would put an \
                 interface and a default route into the host's namespace (set \
                 allow_host_namespace = true in the configuration to allow it)",
                target.describe()
            )));
        }
        self.drop_stale_endpoints(ns_id).await?;

        // Reserve (or find the existing endpoint), waiting out an attach or
        // detach of the same target that is in flight.
        let (endpoint, net) = loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut reg = self.reg();
                let Some(net_state) = reg.networks.get(network) else {
                    return Err(Error::not_found("network", network));
                };
                if !net_state.ready {
                    return Err(Error::Conflict(format!(
                        "network {network:?} is being removed"
                    )));
                }
                if let Some(existing) = reg.find(network, ns_id) {
                    if existing.state == EndpointState::Attached {
                        let ep = &existing.endpoint;
                        if requested_ip.is_some_and(|ip| ip != ep.ipv4.addr()) {
                            return Err(Error::Conflict(format!(
                                "{} is already attached to {network:?} with address {}",
                                target.describe(),
                                ep.ipv4.addr()
                            )));
                        }
                        if ep.ifname != ifname {
                            return Err(Error::Conflict(format!(
                                "{} is already attached to {network:?} as {}",
                                target.describe(),
                                ep.ifname
                            )));
                        }
                        let view = reg
                            .view(existing)
                            .ok_or_else(|| Error::Internal("endpoint without network".into()))?;
                        return Ok(AttachResponse {
                            created: false,
                            endpoint: view,
                        });
                    }
                    // In flight: wait for it to settle, then look again.
                } else if reg.endpoints.values().any(|e| {
                    e.endpoint.netns_id == ns_id
                        && e.endpoint.ifname == ifname
                        && e.state == EndpointState::Detaching
                }) {
                    // The interface is on its way out: wait for it.
                } else {
                    if let Some(other) = reg
                        .endpoints
                        .values()
                        .find(|e| e.endpoint.netns_id == ns_id && e.endpoint.ifname == ifname)
                    {
                        return Err(Error::Conflict(format!(
                            "interface {ifname:?} in {} is already endpoint {} of network {:?}",
                            target.describe(),
                            other.endpoint.id,
                            other.endpoint.network
                        )));
                    }
                    let seq = reg.next_seq;
                    let id = format!("{}{seq:x}", self.link_prefix());
                    if id.len() > model::MAX_IFNAME {
                        return Err(Error::Exhausted(
                            "endpoint ids exhausted for this state directory".into(),
                        ));
                    }
                    let net_state = reg
                        .networks
                        .get_mut(network)
                        .ok_or_else(|| Error::not_found("network", network))?;
                    let ip = match requested_ip {
                        Some(ip) => {
                            net_state.v4.reserve(IpAddr::V4(ip))?;
                            ip
                        }
                        None => match net_state.v4.allocate()? {
                            IpAddr::V4(ip) => ip,
                            IpAddr::V6(_) => return Err(Error::Internal("v6 from v4 pool".into())),
                        },
                    };
                    let ipv6 = match net_state.v6.as_mut().map(|p| p.allocate()) {
                        Some(Ok(IpAddr::V6(a))) => Some(a),
                        Some(Err(e)) => {
                            net_state.v4.release(IpAddr::V4(ip));
                            return Err(e);
                        }
                        _ => None,
                    };
                    let netw = net_state.network.clone();
                    let endpoint = Endpoint {
                        id: id.clone(),
                        network: network.to_string(),
                        target: target.clone(),
                        netns_id: ns_id,
                        ifname: ifname.clone(),
                        host_ifname: id.clone(),
                        mac: model::format_mac(&model::mac_for(ip)),
                        ipv4: Ipv4Net::new(ip, netw.subnet.prefix_len())
                            .map_err(|e| Error::Internal(e.to_string()))?,
                        ipv6: match (ipv6, netw.ipv6_subnet) {
                            (Some(a), Some(s)) => Some(
                                Ipv6Net::new(a, s.prefix_len())
                                    .map_err(|e| Error::Internal(e.to_string()))?,
                            ),
                            _ => None,
                        },
                        default_route,
                        created: model::now_secs(),
                        detaching: false,
                    };
                    reg.next_seq += 1;
                    reg.endpoints.insert(
                        id,
                        EpState {
                            endpoint: endpoint.clone(),
                            state: EndpointState::Attaching,
                        },
                    );
                    break (endpoint, netw);
                }
            }
            notified.await;
        };

        let outcome = self.create_endpoint(&ns, &endpoint, &net).await;
        drop(ns);
        let mut reg = self.reg();
        let result = match outcome {
            Ok(()) => match reg.endpoints.get_mut(&endpoint.id) {
                Some(e) => {
                    e.state = EndpointState::Attached;
                    let e = &reg.endpoints[&endpoint.id];
                    reg.view(e)
                        .map(|view| AttachResponse {
                            created: true,
                            endpoint: view,
                        })
                        .ok_or_else(|| Error::Internal("endpoint without network".into()))
                }
                None => Err(Error::Internal("endpoint vanished during attach".into())),
            },
            Err(e) => {
                reg.endpoints.remove(&endpoint.id);
                reg.release(&endpoint);
                Err(e)
            }
        };
        drop(reg);
        self.changed.notify_waiters();
        if result.is_ok() {
            self.observe_endpoint_up(&endpoint, &net);
        }
        if let Ok(r) = &result {
            tracing::debug!(endpoint = %r.endpoint.endpoint.id, network, address = %endpoint.ipv4, "attached");
        }
        result
    }

    /// Forget the endpoints recorded for this namespace whose host link is
    /// gone: the namespace was deleted and a new one got its inode number
    /// (Linux reuses them, and namespaces are identified by device and
    /// inode), or someone deleted the interface. The kernel deletes a veth
    /// pair with either end, so a live endpoint always has its host link;
    /// checking it costs no netlink round trip.
    async fn drop_stale_endpoints(&self, ns_id: NsId) -> Result<()> {
        let recorded: Vec<(String, String)> = self
            .reg()
            .endpoints
            .values()
            .filter(|e| e.endpoint.netns_id == ns_id && e.state == EndpointState::Attached)
            .map(|e| (e.endpoint.id.clone(), e.endpoint.host_ifname.clone()))
            .collect();
        for (id, host) in recorded {
            if self.kernel.link_exists(&host)? {
                continue;
            }
            let endpoint = {
                let mut reg = self.reg();
                match reg.endpoints.get_mut(&id) {
                    Some(e) if e.state == EndpointState::Attached => {
                        e.state = EndpointState::Detaching;
                        e.endpoint.clone()
                    }
                    // Another request is already on it.
                    _ => continue,
                }
            };
            tracing::warn!(
                endpoint = %id,
                network = %endpoint.network,
                target = %endpoint.target.describe(),
                "host link {host} is gone (the namespace was re-created, or its interface \
                 deleted): forgetting the endpoint"
            );
            if let Err(e) = self.complete_detach(&endpoint).await {
                self.undo_detaching(&id);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Persist, then create in the kernel; undo both on failure.
    async fn create_endpoint(&self, ns: &K::Ns, ep: &Endpoint, net: &Network) -> Result<()> {
        self.persist_endpoint(ep).await?;
        let mut addresses = vec![IpNet::V4(ep.ipv4)];
        let mut gateways = Vec::new();
        if ep.default_route {
            gateways.push(IpAddr::V4(net.gateway));
        }
        if let Some(v6) = ep.ipv6 {
            addresses.push(IpNet::V6(v6));
            if let (true, Some(gw6)) = (ep.default_route, net.ipv6_gateway) {
                gateways.push(IpAddr::V6(gw6));
            }
        }
        let plan = EndpointPlan {
            host_ifname: ep.host_ifname.clone(),
            ifname: ep.ifname.clone(),
            bridge: net.bridge.clone(),
            addresses,
            gateways,
            mtu: net.mtu,
            mac: model::mac_for(ep.ipv4.addr()),
        };
        #[allow(unused_mut)]
        let mut result = self.kernel.create_endpoint(ns, &plan).await;
        #[cfg(any(test, feature = "testing"))]
        if result.is_ok() {
            result = self.fault_after_create_endpoint(ep).await;
        }
        if let Err(e) = result {
            if let Err(undo) = self.unpersist_endpoint(&ep.id).await {
                tracing::warn!(error = %undo, "rollback of state of {} failed", ep.id);
            }
            return Err(e);
        }
        Ok(())
    }
}
