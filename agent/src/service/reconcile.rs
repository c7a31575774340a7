//! Start-up: replay the persisted state and make the kernel agree with it.
use std::collections::HashSet;
use std::net::IpAddr;

use futures::future::join_all;
use ipnet::IpNet;

use super::registry::{EpState, NetState};
use super::Service;
use crate::error::{Error, Result};
use crate::kernel::Kernel;
use crate::model::{Endpoint, EndpointState};

#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReconcileReport {
    pub networks: usize,
    pub bridges_recreated: Vec<String>,
    pub endpoints_kept: usize,
    pub endpoints_removed: Vec<String>,
    pub orphan_links_removed: Vec<String>,
    pub warnings: Vec<String>,
}

impl<K: Kernel> Service<K> {
    /// Replay the persisted state and make the kernel agree with it:
    /// recreate missing bridges, drop endpoints whose namespace is gone or
    /// whose creation never completed (deleting their host veths), and
    /// delete host links of ours that no record knows.
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
            match self.kernel.ensure_bridge(net).await {
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

        // Endpoints: keep the complete ones whose namespace is still there.
        let links: HashSet<String> = self.kernel.link_names().await?.into_iter().collect();
        let mut doomed: Vec<Endpoint> = Vec::new();
        let mut max_seq = 0u64;
        for ep in loaded.endpoints {
            if let Some(seq) = ep
                .id
                .strip_prefix(&prefix)
                .and_then(|s| u64::from_str_radix(s, 16).ok())
            {
                max_seq = max_seq.max(seq);
            }
            match self.check_endpoint(&ep, &links).await {
                Ok(()) => {
                    let kept = self.keep_endpoint(&ep);
                    match kept {
                        Ok(bridge) => {
                            report.endpoints_kept += 1;
                            if recreated.contains(&ep.network) {
                                if let Err(e) =
                                    self.kernel.set_master(&ep.host_ifname, &bridge).await
                                {
                                    report.warnings.push(format!("endpoint {}: {e}", ep.id));
                                }
                            }
                        }
                        Err(e) => {
                            report.warnings.push(format!("endpoint {}: {e}", ep.id));
                            doomed.push(ep);
                        }
                    }
                }
                Err(reason) => {
                    tracing::info!(endpoint = %ep.id, %reason, "dropping endpoint");
                    doomed.push(ep);
                }
            }
        }
        self.reg().next_seq = max_seq + 1;

        // Delete the host ends of dropped endpoints, in parallel.
        let links_ref = &links;
        let results = join_all(doomed.iter().map(|ep| async move {
            let deleted = if links_ref.contains(&ep.host_ifname) {
                self.kernel.delete_link(&ep.host_ifname).await
            } else {
                Ok(false)
            };
            (ep, deleted)
        }))
        .await;
        for (ep, deleted) in results {
            match deleted {
                Ok(_) => {
                    self.store.remove_endpoint(&ep.id)?;
                    report.endpoints_removed.push(ep.id.clone());
                }
                Err(e) => report.warnings.push(format!(
                    "endpoint {}: delete {}: {e}",
                    ep.id, ep.host_ifname
                )),
            }
        }

        // Host links named like ours that no record knows.
        let known: HashSet<String> = self
            .reg()
            .endpoints
            .values()
            .map(|e| e.endpoint.host_ifname.clone())
            .collect();
        let orphans: Vec<&String> = links
            .iter()
            .filter(|l| l.starts_with(&prefix) && !known.contains(*l))
            .filter(|l| !report.endpoints_removed.iter().any(|r| r == *l))
            .collect();
        let results = join_all(orphans.iter().map(|l| self.kernel.delete_link(l))).await;
        for (name, r) in orphans.into_iter().zip(results) {
            match r {
                Ok(_) => report.orphan_links_removed.push(name.clone()),
                Err(e) => report.warnings.push(format!("orphan link {name}: {e}")),
            }
        }
        Ok(report)
    }

    /// Register a replayed endpoint and reserve its addresses; its bridge.
    fn keep_endpoint(&self, ep: &Endpoint) -> Result<String> {
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
