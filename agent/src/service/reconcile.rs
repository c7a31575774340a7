//! Start-up: replay the persisted state and make the kernel agree with it.
//!
//! Recovery never destroys what it cannot prove is garbage. Records are the
//! intent, but the kernel holds the truth when records are missing (a
//! truncated, deleted or damaged journal; a deleted network record): a host
//! veth of ours whose peer is alive is adopted back, a bridge that carries
//! this daemon's mark is adopted back (see `adopt`), and only links whose
//! peer is gone are deleted. Every adoption and every removal is logged with
//! its reason.
use std::collections::HashSet;
use std::net::IpAddr;

use futures::future::join_all;
use ipnet::IpNet;

use super::registry::{EpState, NetState};
use super::Service;
use crate::api::types::UnmanagedBridge;
use crate::error::{Error, Result};
use crate::kernel::{HostLink, Kernel};
use crate::model::{Endpoint, EndpointState};

#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReconcileReport {
    pub networks: usize,
    pub bridges_recreated: Vec<String>,
    /// Networks recreated from a bridge of ours whose record was missing.
    pub networks_adopted: Vec<String>,
    pub endpoints_kept: usize,
    /// Endpoints recreated from the kernel (their records were missing).
    pub endpoints_adopted: Vec<String>,
    pub endpoints_removed: Vec<String>,
    pub orphan_links_removed: Vec<String>,
    /// Links of ours that were neither adopted nor provably garbage.
    pub links_left_alone: Vec<String>,
    /// Bridges in our prefix that no network record uses.
    pub unmanaged_bridges: Vec<UnmanagedBridge>,
    pub warnings: Vec<String>,
}

impl<K: Kernel> Service<K> {
    /// Replay the persisted state and make the kernel agree with it:
    /// recreate missing bridges, adopt bridges and endpoints of ours whose
    /// records are missing, drop endpoints whose namespace is gone or whose
    /// creation never completed (deleting their host veths), and delete
    /// host links of ours whose peer is gone.
    pub async fn reconcile(&self) -> Result<ReconcileReport> {
        let loaded = self.store.load()?;
        let mut report = ReconcileReport {
            warnings: loaded.warnings,
            ..Default::default()
        };
        let prefix = self.link_prefix();

        // Networks and their bridges.
        let mut recreated: HashSet<String> = HashSet::new();
        {
            let mut reg = self.reg();
            reg.networks.clear();
            reg.endpoints.clear();
            for net in &loaded.networks {
                reg.networks
                    .insert(net.name.clone(), NetState::new(net.clone(), true));
            }
        }
        report.networks = loaded.networks.len();
        for net in &loaded.networks {
            match self.kernel.ensure_bridge(net, self.bridge_mark(net)).await {
                Ok(info) if info.created => {
                    tracing::warn!(network = %net.name, bridge = %net.bridge, "recreated missing bridge");
                    recreated.insert(net.name.clone());
                    report.bridges_recreated.push(net.bridge.clone());
                }
                Ok(_) => {}
                Err(e) => report
                    .warnings
                    .push(format!("network {}: bridge {}: {e}", net.name, net.bridge)),
            }
        }
        let host_links = self.kernel.host_links().await?;
        self.adopt_bridges(&host_links, &loaded.endpoints, &mut report)
            .await;

        // Endpoints: keep the complete ones whose namespace is still there.
        let links: HashSet<String> = host_links.iter().map(|l| l.name.clone()).collect();
        let mut doomed: Vec<(Endpoint, String)> = Vec::new();
        let mut max_seq = 0u64;
        for ep in loaded.endpoints {
            if let Some(seq) = self.seq_of(&ep.id) {
                max_seq = max_seq.max(seq);
            }
            match self.check_endpoint(&ep, &links).await {
                Ok(()) => match self.keep_endpoint(&ep) {
                    Ok(bridge) => {
                        report.endpoints_kept += 1;
                        if recreated.contains(&ep.network) {
                            if let Err(e) = self.kernel.set_master(&ep.host_ifname, &bridge).await {
                                report.warnings.push(format!("endpoint {}: {e}", ep.id));
                            }
                        }
                    }
                    Err(e) => doomed.push((ep, e.to_string())),
                },
                Err(reason) => doomed.push((ep, reason)),
            }
        }
        {
            let mut reg = self.reg();
            reg.next_seq = reg.next_seq.max(max_seq + 1);
        }

        // Delete the host ends of dropped endpoints, in parallel.
        let links_ref = &links;
        let results = join_all(doomed.iter().map(|(ep, _)| async move {
            if links_ref.contains(&ep.host_ifname) {
                self.kernel.delete_link(&ep.host_ifname).await
            } else {
                Ok(false)
            }
        }))
        .await;
        for ((ep, reason), deleted) in doomed.iter().zip(results) {
            match deleted {
                Ok(deleted) => {
                    tracing::warn!(
                        endpoint = %ep.id,
                        network = %ep.network,
                        target = %ep.target.describe(),
                        host_link_deleted = deleted,
                        "removed endpoint: {reason}"
                    );
                    self.store.remove_endpoint(&ep.id)?;
                    report.endpoints_removed.push(ep.id.clone());
                }
                Err(e) => report.warnings.push(format!(
                    "endpoint {}: delete {}: {e}",
                    ep.id, ep.host_ifname
                )),
            }
        }

        // Host links named like ours that no record knows: adopted when
        // their peer is alive, deleted only when it is provably gone.
        let strays: Vec<HostLink> = {
            let reg = self.reg();
            let known: HashSet<&str> = reg
                .endpoints
                .values()
                .map(|e| e.endpoint.host_ifname.as_str())
                .chain(reg.networks.values().map(|n| n.network.bridge.as_str()))
                .collect();
            host_links
                .iter()
                .filter(|l| l.name.starts_with(&prefix) && !known.contains(l.name.as_str()))
                .filter(|l| !report.endpoints_removed.contains(&l.name))
                .cloned()
                .collect()
        };
        self.adopt_stray_links(&strays, &recreated, &mut report)
            .await;
        *self.unmanaged.lock().unwrap_or_else(|p| p.into_inner()) =
            report.unmanaged_bridges.clone();
        Ok(report)
    }

    /// The sequence number in an endpoint id of this daemon (`cn<tag><hex>`).
    pub(super) fn seq_of(&self, id: &str) -> Option<u64> {
        id.strip_prefix(&self.link_prefix())
            .and_then(|s| u64::from_str_radix(s, 16).ok())
    }

    /// Register a replayed endpoint and reserve its addresses; its bridge.
    pub(super) fn keep_endpoint(&self, ep: &Endpoint) -> Result<String> {
        let mut reg = self.reg();
        let net = reg
            .networks
            .get_mut(&ep.network)
            .ok_or_else(|| Error::not_found("network", ep.network.clone()))?;
        net.v4.reserve(IpAddr::V4(ep.ipv4.addr()))?;
        if let (Some(p), Some(a)) = (net.v6.as_mut(), ep.ipv6) {
            if let Err(e) = p.reserve(IpAddr::V6(a.addr())) {
                net.v4.release(IpAddr::V4(ep.ipv4.addr()));
                return Err(e);
            }
        }
        let bridge = net.network.bridge.clone();
        reg.endpoints.insert(
            ep.id.clone(),
            EpState {
                endpoint: ep.clone(),
                state: EndpointState::Attached,
            },
        );
        Ok(bridge)
    }

    /// Ok if the endpoint is complete in the kernel; Err(reason) if not.
    async fn check_endpoint(
        &self,
        ep: &Endpoint,
        links: &HashSet<String>,
    ) -> std::result::Result<(), String> {
        if ep.detaching {
            return Err("a detach was in progress".to_string());
        }
        if !self.reg().networks.contains_key(&ep.network) {
            return Err(format!("its network {} is gone", ep.network));
        }
        let (ns, id) = self
            .kernel
            .open(&ep.target)
            .await
            .map_err(|e| format!("{}: {e}", ep.target.describe()))?;
        if id != ep.netns_id {
            return Err(format!("{} is another namespace now", ep.target.describe()));
        }
        if !links.contains(&ep.host_ifname) {
            return Err(format!("host link {} is gone", ep.host_ifname));
        }
        match self
            .kernel
            .endpoint_present(&ns, &ep.ifname, IpNet::V4(ep.ipv4))
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!(
                "{} in {} does not have {} (attach never completed)",
                ep.ifname,
                ep.target.describe(),
                ep.ipv4
            )),
            Err(e) => Err(e.to_string()),
        }
    }
}
