//! The service: networks and endpoints, kept in memory, persisted before the
//! kernel is touched, and rolled back when a step fails.
//!
//! Ordering rules that make crashes safe:
//! - create network: persist the record, then make the bridge (a crash in
//!   between leaves a record whose bridge the next start recreates);
//! - attach: reserve the address and persist the endpoint, then create the
//!   veth (a crash in between leaves a record that reconciliation checks
//!   against the kernel and drops if the endpoint is not complete);
//! - detach / remove: delete in the kernel first, then the record.
//!
//! So an address is on disk before it is in any namespace, and leaves the
//! disk only after it left the kernel: it is never handed out twice.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use futures::future::join_all;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use tokio::sync::Notify;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::ipam::{self, AddressPool};
use crate::kernel::{EndpointPlan, Kernel};
use crate::model::{
    self, AttachRequest, AttachResponse, CreateNetwork, DetachResponse, Endpoint, EndpointState,
    EndpointView, Network, NetworkView, NsId, RemoveResponse, Status, StatusEndpoint,
    StatusNetwork, Target,
};
use crate::state::Store;

/// Environment variable naming a fault to inject (tests only):
/// `after_create_endpoint` makes every attach fail right after the kernel
/// created the endpoint, to exercise the rollback path.
pub const FAULT_ENV: &str = "CONDUCTOR_NETD_FAULT";

struct NetState {
    network: Network,
    v4: AddressPool,
    v6: Option<AddressPool>,
    /// False while the network is being created or removed.
    ready: bool,
}

struct EpState {
    endpoint: Endpoint,
    state: EndpointState,
}

#[derive(Default)]
struct Registry {
    networks: BTreeMap<String, NetState>,
    endpoints: BTreeMap<String, EpState>,
    next_seq: u64,
}

impl Registry {
    fn find(&self, network: &str, id: NsId) -> Option<&EpState> {
        self.endpoints
            .values()
            .find(|e| e.endpoint.network == network && e.endpoint.netns_id == id)
    }

    fn count(&self, network: &str) -> usize {
        self.endpoints
            .values()
            .filter(|e| e.endpoint.network == network)
            .count()
    }

    fn release(&mut self, ep: &Endpoint) {
        if let Some(net) = self.networks.get_mut(&ep.network) {
            net.v4.release(IpAddr::V4(ep.ipv4.addr()));
            if let (Some(pool), Some(v6)) = (net.v6.as_mut(), ep.ipv6) {
                pool.release(IpAddr::V6(v6.addr()));
            }
        }
    }

    fn view(&self, e: &EpState) -> Option<EndpointView> {
        let net = self.networks.get(&e.endpoint.network)?;
        Some(EndpointView {
            result: e.endpoint.cni_result(&net.network),
            endpoint: e.endpoint.clone(),
            state: e.state,
        })
    }
}

/// What a start-up reconciliation did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReconcileReport {
    pub networks: usize,
    pub bridges_recreated: Vec<String>,
    pub endpoints_kept: usize,
    pub endpoints_removed: Vec<String>,
    pub orphan_links_removed: Vec<String>,
    pub warnings: Vec<String>,
}

pub struct Service<K: Kernel> {
    kernel: K,
    store: Arc<Store>,
    config: Config,
    tag: String,
    registry: Mutex<Registry>,
    changed: Notify,
    started: Instant,
    fault: Option<String>,
    probe: Mutex<Option<serde_json::Value>>,
    /// Where detaches that do not wait send their endpoint ids.
    reaper: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<String>>,
}

fn pool_v4(net: &Network) -> AddressPool {
    AddressPool::v4(net.subnet, net.gateway)
}

fn pool_v6(net: &Network) -> Option<AddressPool> {
    match (net.ipv6_subnet, net.ipv6_gateway) {
        (Some(s), Some(g)) => Some(AddressPool::v6(s, g)),
        _ => None,
    }
}

impl<K: Kernel> Service<K> {
    /// A service over `kernel` and the state in `store`. Call `reconcile`
    /// before serving.
    pub fn new(kernel: K, store: Store, config: Config) -> Result<Service<K>> {
        let tag = store.instance()?.tag;
        Ok(Service {
            kernel,
            store: Arc::new(store),
            config,
            tag,
            registry: Mutex::new(Registry::default()),
            changed: Notify::new(),
            started: Instant::now(),
            fault: std::env::var(FAULT_ENV).ok().filter(|f| !f.is_empty()),
            probe: Mutex::new(None),
            reaper: std::sync::OnceLock::new(),
        })
    }

    /// Start the task that finishes detaches that do not wait. Without it
    /// every detach waits.
    pub fn start_reaper(self: &Arc<Self>) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        if self.reaper.set(tx).is_err() {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(id) = rx.recv().await {
                let Some(svc) = weak.upgrade() else { break };
                tokio::spawn(async move {
                    svc.finish_detach(&id).await;
                });
            }
        });
    }

    pub fn kernel(&self) -> &K {
        &self.kernel
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Prefix of the host-side names of this daemon's endpoints.
    pub fn link_prefix(&self) -> String {
        format!("cn{}", self.tag)
    }

    pub fn set_probe(&self, report: serde_json::Value) {
        *self.probe.lock().unwrap_or_else(|p| p.into_inner()) = Some(report);
    }

    pub fn probe(&self) -> Option<serde_json::Value> {
        self.probe.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn reg(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Without fsync a record is one append to the journal in the page cache
    /// (microseconds): done in place. With fsync it goes to the blocking pool.
    async fn persist_endpoint(&self, ep: &Endpoint) -> Result<()> {
        if !self.store.endpoint_fsync() {
            return self.store.save_endpoint(ep);
        }
        let store = self.store.clone();
        let ep = ep.clone();
        tokio::task::spawn_blocking(move || store.save_endpoint(&ep))
            .await
            .map_err(|e| Error::Internal(format!("state writer: {e}")))?
    }

    async fn unpersist_endpoint(&self, id: &str) -> Result<()> {
        if !self.store.endpoint_fsync() {
            return self.store.remove_endpoint(id);
        }
        let store = self.store.clone();
        let id = id.to_string();
        tokio::task::spawn_blocking(move || store.remove_endpoint(&id))
            .await
            .map_err(|e| Error::Internal(format!("state writer: {e}")))?
    }

    // ---- start-up ---------------------------------------------------------

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
                reg.networks.insert(
                    net.name.clone(),
                    NetState {
                        v4: pool_v4(net),
                        v6: pool_v6(net),
                        network: net.clone(),
                        ready: true,
                    },
                );
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

    // ---- networks ---------------------------------------------------------

    pub async fn create_network(&self, req: CreateNetwork) -> Result<NetworkView> {
        model::validate_network_name(&req.name)?;
        let bridge = match &req.bridge {
            Some(b) => {
                model::validate_ifname("bridge name", b)?;
                b.clone()
            }
            None => model::bridge_name(&req.name),
        };
        let mtu = req.mtu.unwrap_or(self.config.mtu);
        if !(68..=65535).contains(&mtu) {
            return Err(Error::invalid("mtu", mtu, "must be 68..=65535"));
        }
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
        let links = self.kernel.link_names().await?;

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
            if links.contains(&bridge) {
                return Err(Error::Conflict(format!(
                    "a link named {bridge:?} already exists in the daemon's namespace \
                     (choose another network name or bridge)"
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
            };
            reg.networks.insert(
                network.name.clone(),
                NetState {
                    v4: pool_v4(&network),
                    v6: pool_v6(&network),
                    network: network.clone(),
                    ready: false,
                },
            );
            network
        };

        let created = async {
            let store = self.store.clone();
            let n = network.clone();
            tokio::task::spawn_blocking(move || store.save_network(&n))
                .await
                .map_err(|e| Error::Internal(format!("state writer: {e}")))??;
            if let Err(e) = self.kernel.ensure_bridge(&network).await {
                let _ = self.kernel.delete_link(&network.bridge).await;
                let _ = self.store.remove_network(&network.name);
                return Err(e);
            }
            Ok(())
        }
        .await;
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
            let results = join_all(ids.iter().map(|id| self.detach_id(id, true))).await;
            let mut detached = 0;
            for r in results {
                if r?.detached {
                    detached += 1;
                }
            }
            if self.reg().count(name) > 0 {
                return Err(Error::Conflict(format!(
                    "network {name:?} still has endpoints"
                )));
            }
            let bridge = self
                .reg()
                .networks
                .get(name)
                .map(|n| n.network.bridge.clone())
                .unwrap_or_default();
            self.kernel.delete_link(&bridge).await?;
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

    // ---- endpoints --------------------------------------------------------

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
        let (ns, ns_id) = self.kernel.open(&target)?;

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
        if let Ok(r) = &result {
            tracing::debug!(endpoint = %r.endpoint.endpoint.id, network, address = %endpoint.ipv4, "attached");
        }
        result
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
        let mut result = self.kernel.create_endpoint(ns, &plan).await;
        if result.is_ok() && self.fault.as_deref() == Some("after_create_endpoint") {
            // Test-only: fail after the kernel step and undo it like any
            // later failure would.
            if let Err(e) = self.kernel.delete_link(&ep.host_ifname).await {
                tracing::warn!(error = %e, "rollback of {} failed", ep.host_ifname);
            }
            result = Err(Error::Internal(format!(
                "injected failure after creating endpoint {} ({FAULT_ENV})",
                ep.id
            )));
        }
        if let Err(e) = result {
            if let Err(undo) = self.unpersist_endpoint(&ep.id).await {
                tracing::warn!(error = %undo, "rollback of state of {} failed", ep.id);
            }
            return Err(e);
        }
        Ok(())
    }

    /// Detach `target` from `network`. Detaching something that is not
    /// attached succeeds with `detached: false`, as long as the target exists.
    pub async fn detach(
        &self,
        network: &str,
        target: &Target,
        wait: bool,
    ) -> Result<DetachResponse> {
        if !self.reg().networks.contains_key(network) {
            return Err(Error::not_found("network", network));
        }
        let id = match self.kernel.open(target) {
            Ok((_ns, ns_id)) => self
                .reg()
                .find(network, ns_id)
                .map(|e| e.endpoint.id.clone()),
            Err(open_error) => {
                // The namespace is gone: find the endpoint by how it was named.
                let found = self
                    .reg()
                    .endpoints
                    .values()
                    .find(|e| e.endpoint.network == network && &e.endpoint.target == target)
                    .map(|e| e.endpoint.id.clone());
                match found {
                    Some(id) => Some(id),
                    None => return Err(open_error),
                }
            }
        };
        match id {
            Some(id) => self.detach_id(&id, wait).await,
            None => Ok(DetachResponse {
                detached: false,
                id: None,
                pending: false,
            }),
        }
    }

    /// Detach an endpoint by id. With `wait` false (and the reaper running)
    /// the answer comes once a tombstone is recorded and the veth deletion
    /// runs in the background.
    pub async fn detach_id(&self, id: &str, wait: bool) -> Result<DetachResponse> {
        let endpoint = loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut reg = self.reg();
                match reg.endpoints.get_mut(id) {
                    None => return Err(Error::not_found("endpoint", id)),
                    Some(e) if e.state == EndpointState::Attached => {
                        e.state = EndpointState::Detaching;
                        break e.endpoint.clone();
                    }
                    Some(_) => {}
                }
            }
            notified.await;
        };
        if let (false, Some(reaper)) = (wait, self.reaper.get()) {
            let mut tombstone = endpoint.clone();
            tombstone.detaching = true;
            let recorded = self.persist_endpoint(&tombstone).await;
            let queued = recorded.and_then(|()| {
                reaper
                    .send(id.to_string())
                    .map_err(|_| Error::Internal("the detach reaper is gone".into()))
            });
            return match queued {
                Ok(()) => Ok(DetachResponse {
                    detached: true,
                    id: Some(id.to_string()),
                    pending: true,
                }),
                Err(e) => {
                    self.undo_detaching(id);
                    Err(e)
                }
            };
        }
        let result = self.complete_detach(&endpoint).await;
        if result.is_err() {
            self.undo_detaching(id);
        }
        result.map(|()| DetachResponse {
            detached: true,
            id: Some(id.to_string()),
            pending: false,
        })
    }

    /// Delete the veth and the record of an endpoint in state Detaching,
    /// then forget it and free its addresses.
    async fn complete_detach(&self, endpoint: &Endpoint) -> Result<()> {
        self.kernel.delete_link(&endpoint.host_ifname).await?;
        self.unpersist_endpoint(&endpoint.id).await?;
        {
            let mut reg = self.reg();
            reg.endpoints.remove(&endpoint.id);
            reg.release(endpoint);
        }
        self.changed.notify_waiters();
        Ok(())
    }

    fn undo_detaching(&self, id: &str) {
        if let Some(ep) = self.reg().endpoints.get_mut(id) {
            ep.state = EndpointState::Attached;
        }
        self.changed.notify_waiters();
    }

    /// The background half of a detach that did not wait.
    async fn finish_detach(&self, id: &str) {
        let endpoint = self.reg().endpoints.get(id).map(|e| e.endpoint.clone());
        let Some(endpoint) = endpoint else { return };
        if let Err(e) = self.complete_detach(&endpoint).await {
            tracing::error!(endpoint = %id, error = %e, "background detach failed; the endpoint stays attached");
            if let Err(e) = self.persist_endpoint(&endpoint).await {
                tracing::error!(endpoint = %id, error = %e, "could not clear the detach tombstone");
            }
            self.undo_detaching(id);
        }
    }

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
        }
    }
}

#[cfg(test)]
#[path = "service_tests.rs"]
pub(crate) mod tests;
