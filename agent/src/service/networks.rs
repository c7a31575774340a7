//! Networks: create (validated, persisted, then the bridge), list, remove
//! (detaching every endpoint first when forced).
use futures::future::join_all;
use ipnet::IpNet;

use super::registry::NetState;
use super::Service;
use crate::api::types::{CreateNetwork, NetworkView, RemoveResponse};
use crate::error::{Error, Result};
use crate::ipam;
use crate::kernel::Kernel;
use crate::model::{self, Network};

impl<K: Kernel> Service<K> {
    pub async fn create_network(&self, req: CreateNetwork) -> Result<NetworkView> {
        model::validate_network_name(&req.name)?;
        let bridge = match &req.bridge {
            Some(b) => {
                model::validate_ifname("bridge name", b)?;
                b.clone()
            }
            None => model::bridge_name(&req.name),
        };
        if bridge.starts_with(&self.link_prefix()) {
            // This daemon names its host veths cn<tag><n>: a bridge named so
            // would be taken for one of them (and deleted) at every start.
            return Err(Error::invalid(
                "bridge name",
                &bridge,
                format!(
                    "{}* is this daemon's prefix for endpoint links",
                    self.link_prefix()
                ),
            ));
        }
        let mtu = req.mtu.unwrap_or(self.config.mtu);
        model::validate_mtu(mtu)?;
        let requested = match &req.subnet {
            Some(s) => Some(ipam::parse_subnet_v4(s)?),
            None => {
                if req.gateway.is_some() {
                    return Err(Error::invalid(
                        "gateway",
                        req.gateway.clone().unwrap_or_default(),
                        "a gateway needs an explicit --subnet",
                    ));
                }
                None
            }
        };
        if let Some(s) = requested {
            ipam::gateway_v4(s, req.gateway.as_deref())?;
        }
        let v6 = match &req.ipv6_subnet {
            Some(s) => {
                let net = ipam::parse_subnet_v6(s)?;
                let gw = std::net::Ipv6Addr::from(u128::from(net.network()) + 1);
                Some((net, gw))
            }
            None => None,
        };
        // What the namespace already routes (outside the lock: it awaits).
        let used = self.kernel.used_networks().await?;
        let links = self.kernel.host_links().await?;
        let existing = links.iter().find(|l| l.name == bridge);
        let unused = !self
            .reg()
            .networks
            .values()
            .any(|n| n.network.bridge == bridge);
        if let (Some(link), true) = (existing, unused) {
            if self.is_ours(link, &links) {
                return self.adopt_requested(&req, link).await;
            }
        }

        let network = {
            let mut reg = self.reg();
            if reg.networks.contains_key(&req.name) {
                return Err(Error::Conflict(format!(
                    "network {:?} already exists",
                    req.name
                )));
            }
            if let Some(other) = reg.networks.values().find(|n| n.network.bridge == bridge) {
                return Err(Error::Conflict(format!(
                    "bridge {bridge:?} is already used by network {:?}",
                    other.network.name
                )));
            }
            if existing.is_some() {
                return Err(Error::Conflict(format!(
                    "a link named {bridge:?} already exists in the daemon's namespace and \
                     was not made by this daemon (it lacks conductor-netd's mark): delete it \
                     (`ip link del {bridge}`) if it is a leftover, or choose another network \
                     name or --bridge"
                )));
            }
            let subnet = match requested {
                Some(s) => {
                    let net = IpNet::V4(s);
                    if let Some(other) = reg
                        .networks
                        .values()
                        .find(|n| ipam::overlaps(&net, &IpNet::V4(n.network.subnet)))
                    {
                        return Err(Error::Conflict(format!(
                            "subnet {s} overlaps network {:?} ({})",
                            other.network.name, other.network.subnet
                        )));
                    }
                    if let Some(route) = used
                        .iter()
                        .find(|r| r.prefix_len() > 0 && ipam::overlaps(&net, r))
                    {
                        return Err(Error::Conflict(format!(
                            "subnet {s} overlaps {route}, already routed in the daemon's namespace"
                        )));
                    }
                    s
                }
                None => {
                    let mut taken = used.clone();
                    taken.extend(reg.networks.values().map(|n| IpNet::V4(n.network.subnet)));
                    ipam::pick_subnet(self.config.pool, self.config.pool_prefix, &taken)?
                }
            };
            if let Some((s6, _)) = v6 {
                let net = IpNet::V6(s6);
                if let Some(other) = reg.networks.values().find(|n| {
                    n.network
                        .ipv6_subnet
                        .is_some_and(|o| ipam::overlaps(&net, &IpNet::V6(o)))
                }) {
                    return Err(Error::Conflict(format!(
                        "ipv6 subnet {s6} overlaps network {:?}",
                        other.network.name
                    )));
                }
            }
            let gateway = ipam::gateway_v4(subnet, req.gateway.as_deref())?;
            let network = Network {
                name: req.name.clone(),
                bridge: bridge.clone(),
                subnet,
                gateway,
                ipv6_subnet: v6.map(|(s, _)| s),
                ipv6_gateway: v6.map(|(_, g)| g),
                mtu,
                created: model::now_secs(),
                internal: req.internal,
            };
            reg.networks
                .insert(network.name.clone(), NetState::new(network.clone(), false));
            network
        };

        let created = async {
            let store = self.store.clone();
            let n = network.clone();
            tokio::task::spawn_blocking(move || store.save_network(&n))
                .await
                .map_err(|e| Error::Internal(format!("state writer: {e}")))??;
            if let Err(e) = self
                .kernel
                .ensure_bridge(&network, self.bridge_mark(&network))
                .await
            {
                let _ = self.kernel.delete_link(&network.bridge).await;
                let store = self.store.clone();
                let name = network.name.clone();
                let _ = tokio::task::spawn_blocking(move || store.remove_network(&name)).await;
                return Err(e);
            }
            Ok(())
        }
        .await;
        if created.is_ok() {
            // Names and egress before anyone can attach to it.
            self.observe_network_up(&network).await;
        }
        let mut reg = self.reg();
        match created {
            Ok(()) => {
                if let Some(n) = reg.networks.get_mut(&network.name) {
                    n.ready = true;
                }
                tracing::info!(network = %network.name, bridge = %network.bridge, subnet = %network.subnet, "network created");
                Ok(NetworkView {
                    network,
                    endpoints: 0,
                })
            }
            Err(e) => {
                reg.networks.remove(&network.name);
                Err(e)
            }
        }
    }

    /// `network create` of a bridge of ours that no record uses (its
    /// record was deleted or set aside): take it back as it is, if the
    /// request agrees with it, with the endpoints of ours on it.
    async fn adopt_requested(
        &self,
        req: &CreateNetwork,
        link: &crate::kernel::HostLink,
    ) -> Result<NetworkView> {
        let found = self.network_from_bridge(&req.name, link).await?;
        let differs = |what: &str, asked: &str, has: String| {
            Error::Conflict(format!(
                "bridge {:?} (made by this daemon, its network record is missing) has \
                 {what} {has}, not {asked}: create the network with that {what} to adopt it, \
                 or delete the bridge (`ip link del {}`)",
                link.name, link.name
            ))
        };
        if let Some(asked) = &req.subnet {
            if ipam::parse_subnet_v4(asked)? != found.subnet {
                return Err(differs("subnet", asked, found.subnet.to_string()));
            }
        }
        if let Some(asked) = &req.gateway {
            if ipam::gateway_v4(found.subnet, Some(asked))? != found.gateway {
                return Err(differs("gateway", asked, found.gateway.to_string()));
            }
        }
        if let Some(asked) = &req.ipv6_subnet {
            if Some(ipam::parse_subnet_v6(asked)?) != found.ipv6_subnet {
                let has = found.ipv6_subnet.map(|s| s.to_string());
                return Err(differs("ipv6 subnet", asked, has.unwrap_or("none".into())));
            }
        }
        let network = self.adopt_network(&req.name, link).await?;
        tracing::warn!(
            network = %network.name,
            bridge = %network.bridge,
            subnet = %network.subnet,
            "adopted a bridge of ours whose network record was missing"
        );
        // Its endpoints whose records went with it.
        let prefix = self.link_prefix();
        let links = self.kernel.host_links().await?;
        let strays: Vec<crate::kernel::HostLink> = {
            let reg = self.reg();
            links
                .into_iter()
                .filter(|l| l.name.starts_with(&prefix))
                .filter(|l| {
                    !reg.endpoints
                        .values()
                        .any(|e| e.endpoint.host_ifname == l.name)
                })
                .collect()
        };
        self.observe_network_up(&network).await;
        let mut report = super::ReconcileReport::default();
        self.adopt_stray_links(&strays, &Default::default(), &mut report)
            .await;
        for w in &report.warnings {
            tracing::warn!("adopting {}: {w}", network.name);
        }
        let adopted: Vec<crate::model::Endpoint> = self
            .reg()
            .endpoints
            .values()
            .filter(|e| e.endpoint.network == network.name)
            .map(|e| e.endpoint.clone())
            .collect();
        for e in &adopted {
            self.observe_endpoint_up(e, &network);
        }
        Ok(NetworkView {
            endpoints: self.reg().count(&network.name),
            network,
        })
    }

    pub fn networks(&self) -> Vec<NetworkView> {
        let reg = self.reg();
        reg.networks
            .values()
            .filter(|n| n.ready)
            .map(|n| NetworkView {
                network: n.network.clone(),
                endpoints: reg.count(&n.network.name),
            })
            .collect()
    }

    pub fn network(&self, name: &str) -> Result<NetworkView> {
        let reg = self.reg();
        match reg.networks.get(name) {
            Some(n) => Ok(NetworkView {
                network: n.network.clone(),
                endpoints: reg.count(name),
            }),
            None => Err(Error::not_found("network", name)),
        }
    }

    pub async fn remove_network(&self, name: &str, force: bool) -> Result<RemoveResponse> {
        let ids: Vec<String> = {
            let mut reg = self.reg();
            let Some(net) = reg.networks.get(name) else {
                return Err(Error::not_found("network", name));
            };
            if !net.ready {
                return Err(Error::Conflict(format!(
                    "network {name:?} is being created or removed"
                )));
            }
            let ids: Vec<String> = reg
                .endpoints
                .values()
                .filter(|e| e.endpoint.network == name)
                .map(|e| e.endpoint.id.clone())
                .collect();
            if !ids.is_empty() && !force {
                return Err(Error::Conflict(format!(
                    "network {name:?} has {} endpoint(s); detach them first or remove with --force",
                    ids.len()
                )));
            }
            if let Some(net) = reg.networks.get_mut(name) {
                net.ready = false;
            }
            ids
        };
        let result = async {
            // Every endpoint is tried, and every failure reported.
            let results = join_all(ids.iter().map(|id| self.detach_id(id, true))).await;
            let mut detached = 0;
            let mut failures = Vec::new();
            for r in results {
                match r {
                    Ok(r) if r.detached => detached += 1,
                    Ok(_) => {}
                    Err(e) => failures.push(e),
                }
            }
            Error::collect(format!("remove network {name:?}"), failures)?;
            if self.reg().count(name) > 0 {
                return Err(Error::Conflict(format!(
                    "network {name:?} still has endpoints"
                )));
            }
            let network = self.reg().networks.get(name).map(|n| n.network.clone());
            let Some(network) = network else {
                return Err(Error::not_found("network", name));
            };
            self.observe_network_down(&network).await;
            if let Err(e) = self.kernel.delete_link(&network.bridge).await {
                self.observe_network_up(&network).await;
                return Err(e);
            }
            let store = self.store.clone();
            let n = name.to_string();
            tokio::task::spawn_blocking(move || store.remove_network(&n))
                .await
                .map_err(|e| Error::Internal(format!("state writer: {e}")))??;
            Ok(detached)
        }
        .await;
        let mut reg = self.reg();
        match result {
            Ok(detached) => {
                reg.networks.remove(name);
                tracing::info!(network = %name, detached, "network removed");
                Ok(RemoveResponse {
                    removed: name.to_string(),
                    detached,
                })
            }
            Err(e) => {
                if let Some(net) = reg.networks.get_mut(name) {
                    net.ready = true;
                }
                Err(e)
            }
        }
    }
}
