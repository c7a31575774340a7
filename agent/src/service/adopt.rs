//! Adoption: when records are missing, what the kernel still holds is taken
//! back instead of being deleted.
//!
//! - A host veth of ours (named with this daemon's tag) whose peer is found
//!   in a namespace the daemon can see becomes an endpoint again: address,
//!   network (the one whose subnet holds the address), namespace and
//!   interface are read from the kernel. Its peer is found by the veth's
//!   IFLA_LINK on Linux, and by the pair's MACs where the kernel reports no
//!   peer (gVisor; netns gives the host end the paired MAC of the inner one).
//! - A bridge in our prefix that no record uses is adopted when it is
//!   provably ours (it carries this daemon's MAC mark, or a host link of ours
//!   is attached to it) and its network's name is known; otherwise it is
//!   reported (`status`), with the fix.
use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::reconcile::ReconcileReport;
use super::registry::{EpState, NetState};
use super::Service;
use crate::api::types::UnmanagedBridge;
use crate::error::{Error, Result};
use crate::ipam;
use crate::kernel::{HostLink, Kernel, Peer};
use crate::model::{self, Endpoint, EndpointState, Network};

impl<K: Kernel> Service<K> {
    /// The MAC this daemon gives a bridge it creates (its mark).
    pub(super) fn bridge_mark(&self, net: &Network) -> [u8; 6] {
        model::bridge_mac(&self.tag, &net.bridge)
    }

    /// Is this bridge provably this daemon's?
    pub(super) fn is_ours(&self, bridge: &HostLink, links: &[HostLink]) -> bool {
        let marked = bridge.mac == Some(model::bridge_mac(&self.tag, &bridge.name));
        let prefix = self.link_prefix();
        marked
            || links.iter().any(|l| {
                l.name.starts_with(&prefix) && l.master.as_deref() == Some(bridge.name.as_str())
            })
    }

    /// The network a bridge describes: its gateway addresses (one IPv4,
    /// at most one IPv6 besides link-local ones) and MTU.
    pub(super) async fn network_from_bridge(&self, name: &str, link: &HostLink) -> Result<Network> {
        let bad = |reason: String| Error::Conflict(format!("bridge {:?}: {reason}", link.name));
        let addresses = self.kernel.link_addresses(&link.name).await?;
        let v4: Vec<Ipv4Net> = addresses
            .iter()
            .filter_map(|a| match a {
                IpNet::V4(v4) => Some(*v4),
                IpNet::V6(_) => None,
            })
            .collect();
        let v6: Vec<Ipv6Net> = addresses
            .iter()
            .filter_map(|a| match a {
                IpNet::V6(v6) if (v6.addr().segments()[0] & 0xffc0) != 0xfe80 => Some(*v6),
                _ => None,
            })
            .collect();
        let [gateway] = v4.as_slice() else {
            return Err(bad(format!(
                "{} IPv4 addresses, a network's bridge has one (its gateway)",
                v4.len()
            )));
        };
        let subnet = gateway.trunc();
        ipam::check_subnet_v4(subnet).map_err(|e| bad(e.to_string()))?;
        let (ipv6_subnet, ipv6_gateway) = match v6.as_slice() {
            [] => (None, None),
            [gw6] => {
                ipam::check_subnet_v6(gw6.trunc()).map_err(|e| bad(e.to_string()))?;
                (Some(gw6.trunc()), Some(gw6.addr()))
            }
            more => {
                return Err(bad(format!(
                    "{} IPv6 addresses, a network's bridge has at most one",
                    more.len()
                )))
            }
        };
        let network = Network {
            name: name.to_string(),
            bridge: link.name.clone(),
            subnet,
            gateway: gateway.addr(),
            ipv6_subnet,
            ipv6_gateway,
            mtu: link
                .mtu
                .filter(|m| model::validate_mtu(*m).is_ok())
                .unwrap_or(self.config.mtu),
            created: model::now_secs(),
            // A bridge keeps no record of it: adopted networks have egress.
            internal: false,
        };
        network.validate().map_err(|e| bad(e.to_string()))?;
        Ok(network)
    }

    /// Bridges in our prefix that no network record uses: adopt the ones
    /// provably ours whose network name is known (from an endpoint record
    /// naming it, or from the bridge name `cn-NAME`); report the others.
    pub(super) async fn adopt_bridges(
        &self,
        links: &[HostLink],
        endpoints: &[Endpoint],
        report: &mut ReconcileReport,
    ) {
        let used: HashSet<String> = self
            .reg()
            .networks
            .values()
            .map(|n| n.network.bridge.clone())
            .collect();
        for link in links {
            if !link.name.starts_with(model::BRIDGE_PREFIX)
                || used.contains(&link.name)
                || link.bridge == Some(false)
            {
                continue;
            }
            let from_endpoints = endpoints
                .iter()
                .map(|e| e.network.as_str())
                .find(|n| model::bridge_name(n) == link.name);
            let from_bridge = link
                .name
                .strip_prefix(model::BRIDGE_PREFIX)
                .filter(|n| model::validate_network_name(n).is_ok())
                .filter(|n| model::bridge_name(n) == link.name)
                .filter(|n| !looks_hashed(n));
            let name = from_endpoints.or(from_bridge);
            let ours = self.is_ours(link, links);
            let adopted = match (ours, name) {
                (true, Some(name)) => Some(self.adopt_network(name, link).await),
                _ => None,
            };
            match adopted {
                Some(Ok(net)) => {
                    tracing::warn!(
                        network = %net.name,
                        bridge = %net.bridge,
                        subnet = %net.subnet,
                        "adopted a bridge of ours whose network record was missing"
                    );
                    report.networks_adopted.push(net.name);
                }
                other => {
                    let why = match other {
                        Some(Err(e)) => format!(" (not adopted: {e})"),
                        _ => String::new(),
                    };
                    let bridge = self.unmanaged_bridge(link, ours).await;
                    report.warnings.push(format!(
                        "unmanaged bridge {} in our prefix{why}: {}",
                        link.name, bridge.fix
                    ));
                    report.unmanaged_bridges.push(bridge);
                }
            }
        }
    }

    /// Describe a bridge no record uses, with what to do about it.
    async fn unmanaged_bridge(&self, link: &HostLink, ours: bool) -> UnmanagedBridge {
        let addresses: Vec<String> = self
            .kernel
            .link_addresses(&link.name)
            .await
            .unwrap_or_default()
            .iter()
            .map(|a| a.to_string())
            .collect();
        let fix = if ours {
            format!(
                "made by this daemon, its network record is missing: `conductor-netd network \
                 create NAME` with the network's name adopts it (its bridge name is {}), or \
                 delete it with `ip link del {}`",
                link.name, link.name
            )
        } else {
            format!(
                "not made by this daemon (no conductor-netd mark): delete it with `ip link del \
                 {}` if nothing uses it, or give the network another --bridge",
                link.name
            )
        };
        UnmanagedBridge {
            bridge: link.name.clone(),
            addresses,
            ours,
            fix,
        }
    }

    /// Record a network for a bridge of ours and register it.
    pub(super) async fn adopt_network(&self, name: &str, link: &HostLink) -> Result<Network> {
        let net = self.network_from_bridge(name, link).await?;
        {
            // Registered (not ready) before it is saved: a concurrent
            // create of the same name or bridge meets it.
            let mut reg = self.reg();
            if reg.networks.contains_key(name) {
                return Err(Error::Conflict(format!("network {name:?} already exists")));
            }
            if let Some(other) = reg.networks.values().find(|n| {
                n.network.bridge == net.bridge
                    || ipam::overlaps(&IpNet::V4(net.subnet), &IpNet::V4(n.network.subnet))
            }) {
                return Err(Error::Conflict(format!(
                    "its bridge or subnet {} is network {:?}'s",
                    net.subnet, other.network.name
                )));
            }
            reg.networks
                .insert(net.name.clone(), NetState::new(net.clone(), false));
        }
        let store = self.store.clone();
        let record = net.clone();
        let saved = tokio::task::spawn_blocking(move || store.save_network(&record))
            .await
            .map_err(|e| Error::Internal(format!("state writer: {e}")))
            .and_then(|r| r);
        let mut reg = self.reg();
        if let Err(e) = saved {
            reg.networks.remove(&net.name);
            return Err(e);
        }
        if let Some(state) = reg.networks.get_mut(&net.name) {
            state.ready = true;
        }
        drop(reg);
        self.unmanaged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|b| b.bridge != net.bridge);
        Ok(net)
    }

    /// Host links of ours that no record knows: adopt those whose peer is
    /// found; delete those whose peer is provably gone; leave the rest.
    pub(super) async fn adopt_stray_links(
        &self,
        strays: &[HostLink],
        recreated: &HashSet<String>,
        report: &mut ReconcileReport,
    ) {
        if strays.is_empty() {
            return;
        }
        let peers = match self.kernel.find_peers(strays).await {
            Ok(p) => p,
            Err(e) => {
                report.warnings.push(format!(
                    "looking for the peers of {} unknown link(s) of ours failed: {e}; \
                     left alone",
                    strays.len()
                ));
                report
                    .links_left_alone
                    .extend(strays.iter().map(|l| l.name.clone()));
                return;
            }
        };
        for link in strays {
            let peer = peers.iter().find(|(name, _)| *name == link.name);
            let verdict = match peer {
                Some((_, peer)) => self.adopt_endpoint(link, peer).await,
                None => Err(Disposal::gone_or_hidden(link)),
            };
            match verdict {
                Ok(ep) => {
                    tracing::warn!(
                        endpoint = %ep.id,
                        network = %ep.network,
                        target = %ep.target.describe(),
                        ifname = %ep.ifname,
                        address = %ep.ipv4,
                        "adopted an endpoint whose record was missing"
                    );
                    if recreated.contains(&ep.network) {
                        let bridge = self
                            .reg()
                            .networks
                            .get(&ep.network)
                            .map(|n| n.network.bridge.clone());
                        if let Some(bridge) = bridge {
                            if let Err(e) = self.kernel.set_master(&ep.host_ifname, &bridge).await {
                                report.warnings.push(format!("endpoint {}: {e}", ep.id));
                            }
                        }
                    }
                    report.endpoints_adopted.push(ep.id);
                }
                Err(Disposal::Keep(reason)) => {
                    tracing::warn!(link = %link.name, "left alone: {reason}");
                    report
                        .warnings
                        .push(format!("link {} left alone: {reason}", link.name));
                    report.links_left_alone.push(link.name.clone());
                }
                Err(Disposal::Delete(reason)) => match self.kernel.delete_link(&link.name).await {
                    Ok(_) => {
                        tracing::warn!(link = %link.name, "removed: {reason}");
                        report.orphan_links_removed.push(link.name.clone());
                    }
                    Err(e) => report
                        .warnings
                        .push(format!("orphan link {} ({reason}): {e}", link.name)),
                },
            }
        }
    }

    /// Make an endpoint of a host link and its peer: reserve its addresses,
    /// persist and register it.
    async fn adopt_endpoint(&self, link: &HostLink, peer: &Peer) -> Result<Endpoint, Disposal> {
        let endpoint = {
            let mut reg = self.reg();
            let found = peer.addresses.iter().find_map(|a| match a {
                IpNet::V4(v4) => reg
                    .networks
                    .values()
                    .find(|n| n.network.subnet.contains(&v4.addr()))
                    .map(|n| (*v4, n.network.clone())),
                IpNet::V6(_) => None,
            });
            let Some((v4, net)) = found else {
                // Its network's record may come back (`network create`
                // adopts the bridge): nothing proves it garbage.
                return Err(Disposal::Keep(format!(
                    "its peer {} in {} has no address in any network ({})",
                    peer.ifname,
                    peer.target.describe(),
                    join(&peer.addresses)
                )));
            };
            if let Some(master) = &link.master {
                if *master != net.bridge {
                    return Err(Disposal::Keep(format!(
                        "it is attached to {master}, not to {}, the bridge of network {:?}",
                        net.bridge, net.name
                    )));
                }
            }
            if let Some(other) = reg.endpoints.values().find(|e| {
                e.endpoint.netns_id == peer.netns_id
                    && (e.endpoint.network == net.name || e.endpoint.ifname == peer.ifname)
            }) {
                return Err(Disposal::Delete(format!(
                    "{} already has endpoint {} ({} on {:?}) on record",
                    peer.target.describe(),
                    other.endpoint.id,
                    other.endpoint.ifname,
                    other.endpoint.network
                )));
            }
            let v6 = peer
                .addresses
                .iter()
                .find_map(|a| match (a, net.ipv6_subnet) {
                    (IpNet::V6(v6), Some(s)) if s.contains(&v6.addr()) => Some(*v6),
                    _ => None,
                });
            let Some(state) = reg.networks.get_mut(&net.name) else {
                return Err(Disposal::Keep(format!("network {:?} vanished", net.name)));
            };
            state
                .v4
                .reserve(IpAddr::V4(v4.addr()))
                .map_err(|e| Disposal::Delete(format!("{e}: a recorded endpoint has it")))?;
            if let (Some(pool), Some(v6)) = (state.v6.as_mut(), v6) {
                if let Err(e) = pool.reserve(IpAddr::V6(v6.addr())) {
                    state.v4.release(IpAddr::V4(v4.addr()));
                    return Err(Disposal::Delete(format!("{e}: a recorded endpoint has it")));
                }
            }
            let endpoint = Endpoint {
                id: link.name.clone(),
                network: net.name.clone(),
                target: peer.target.clone(),
                netns_id: peer.netns_id,
                ifname: peer.ifname.clone(),
                host_ifname: link.name.clone(),
                mac: model::format_mac(&peer.mac.unwrap_or(model::mac_for(v4.addr()))),
                ipv4: Ipv4Net::new(v4.addr(), net.subnet.prefix_len()).unwrap_or(v4),
                ipv6: v6,
                default_route: peer.gateways.contains(&IpAddr::V4(net.gateway)),
                created: model::now_secs(),
                detaching: false,
            };
            reg.endpoints.insert(
                endpoint.id.clone(),
                EpState {
                    endpoint: endpoint.clone(),
                    state: EndpointState::Attached,
                },
            );
            if let Some(seq) = self.seq_of(&endpoint.id) {
                reg.next_seq = reg.next_seq.max(seq + 1);
            }
            endpoint
        };
        if let Err(e) = self.persist_endpoint(&endpoint).await {
            let mut reg = self.reg();
            reg.endpoints.remove(&endpoint.id);
            reg.release(&endpoint);
            return Err(Disposal::Keep(format!(
                "its record could not be written: {e}"
            )));
        }
        Ok(endpoint)
    }
}

/// What to do with a host link of ours that could not be adopted.
enum Disposal {
    /// Not provably garbage: leave it in the kernel.
    Keep(String),
    /// Garbage, for this reason.
    Delete(String),
}

impl Disposal {
    /// A host link whose peer is in no namespace the daemon can see: its
    /// peer's namespace is gone, unless the kernel says it is alive (Linux
    /// reports the peer namespace's id while it lives: then it is only
    /// hidden, e.g. held by an open file descriptor).
    fn gone_or_hidden(link: &HostLink) -> Disposal {
        match link.peer_elsewhere {
            Some(true) => Disposal::Keep(
                "its peer lives in a namespace that is alive but not visible (not named, \
                 not mounted, no process in it)"
                    .into(),
            ),
            Some(false) => Disposal::Delete("it has no peer in another namespace".into()),
            None => Disposal::Delete(
                "its peer is in no namespace the daemon can see (named, mounted or of a \
                 process): gone"
                    .into(),
            ),
        }
    }
}

/// `bridge_name` of a long network name is `cn-` + 6 bytes + `-` + 5 hex
/// digits: such a bridge may belong to a longer name than it shows.
fn looks_hashed(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() == 12 && b[6] == b'-' && b[7..].iter().all(u8::is_ascii_hexdigit)
}

fn join(addresses: &[IpNet]) -> String {
    if addresses.is_empty() {
        return "none".into();
    }
    addresses
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
