//! An in-memory kernel for tests and for running the daemon without
//! privileges (`serve --fake-kernel`): the API, state and IPAM are real,
//! links are entries in a map.
//!
//! Targets resolve like this: a netns NAME exists when the file
//! `NETNS_DIR/NAME` exists; a netns PATH exists when the file exists; a PID
//! exists when `/proc/PID` does. The namespace's identity is the file's
//! (device, inode), so tests can make and remove "namespaces" with plain files.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Mutex;

use ipnet::IpNet;
use nix::errno::Errno;

use super::{BridgeInfo, DockerVeth, EndpointPlan, HostLink, Kernel, Peer};
use crate::error::{Error, Result};
use crate::model::{Network, NsId, Target};

#[derive(Debug, Clone, Default)]
pub struct FakeLink {
    pub bridge: bool,
    pub master: Option<String>,
    pub mac: Option<[u8; 6]>,
    /// A bridge's addresses (its gateways).
    pub addresses: Vec<IpNet>,
    /// For an endpoint's host end: the other end.
    pub peer: Option<FakePeer>,
}

/// The namespace end of a fake veth.
#[derive(Debug, Clone)]
pub struct FakePeer {
    pub ns: NsId,
    pub ifname: String,
    pub mac: [u8; 6],
    pub addresses: Vec<IpNet>,
    pub gateways: Vec<std::net::IpAddr>,
}

#[derive(Default)]
struct Inner {
    links: HashMap<String, FakeLink>,
    routes: Vec<IpNet>,
    fail: HashMap<&'static str, usize>,
    calls: HashMap<&'static str, usize>,
    delays: HashMap<&'static str, std::time::Duration>,
}

pub struct FakeKernel {
    netns_dir: PathBuf,
    own: NsId,
    inner: Mutex<Inner>,
}

fn netlink_error(op: &'static str, object: &str, errno: Errno) -> netns::Error {
    netns::Error::Netlink {
        op,
        object: object.to_string(),
        errno,
    }
}

impl FakeKernel {
    pub fn new(netns_dir: impl Into<PathBuf>) -> FakeKernel {
        // The test process's own namespace stands for the daemon's.
        let own = std::fs::metadata("/proc/self/ns/net")
            .map(|m| NsId {
                dev: m.dev(),
                ino: m.ino(),
            })
            .unwrap_or(NsId { dev: 0, ino: 0 });
        FakeKernel {
            netns_dir: netns_dir.into(),
            own,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Make the next `times` calls of `op` fail ("create_endpoint",
    /// "ensure_bridge", "delete_link").
    pub fn fail(&self, op: &'static str, times: usize) {
        self.lock().fail.insert(op, times);
    }

    /// Make every call of `op` ("delete_link", "create_endpoint") take this
    /// long, as the real kernel's RCU wait does.
    pub fn delay(&self, op: &'static str, by: std::time::Duration) {
        self.lock().delays.insert(op, by);
    }

    async fn pause(&self, op: &'static str) {
        let delay = self.lock().delays.get(op).copied();
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
    }

    /// Add a route to the "daemon namespace" (automatic subnets avoid it).
    pub fn add_route(&self, net: IpNet) {
        self.lock().routes.push(net);
    }

    /// Add a plain link as if someone else had made it.
    pub fn add_link(&self, name: &str) {
        self.lock()
            .links
            .insert(name.to_string(), FakeLink::default());
    }

    /// Add a link with the given properties (a bridge someone left, ...).
    pub fn put_link(&self, name: &str, link: FakeLink) {
        self.lock().links.insert(name.to_string(), link);
    }

    /// Remove a link as if someone else had (`ip link del`).
    pub fn remove_link(&self, name: &str) -> bool {
        self.lock().links.remove(name).is_some()
    }

    pub fn links(&self) -> HashMap<String, FakeLink> {
        self.lock().links.clone()
    }

    pub fn calls(&self, op: &'static str) -> usize {
        self.lock().calls.get(op).copied().unwrap_or(0)
    }

    fn enter(&self, op: &'static str, object: &str) -> Result<()> {
        let mut inner = self.lock();
        *inner.calls.entry(op).or_insert(0) += 1;
        if let Some(n) = inner.fail.get_mut(op) {
            if *n > 0 {
                *n -= 1;
                return Err(Error::kernel(
                    format!("{op} {object} (injected failure)"),
                    netlink_error(op, object, Errno::EIO),
                ));
            }
        }
        Ok(())
    }
}

/// Identity of a file (following symlinks): a fake namespace's.
fn file_id(path: &std::path::Path) -> Option<NsId> {
    std::fs::metadata(path).ok().map(|m| NsId {
        dev: m.dev(),
        ino: m.ino(),
    })
}

/// A fake namespace: only its identity.
#[derive(Debug, Clone, Copy)]
pub struct FakeNs(pub NsId);

impl Kernel for FakeKernel {
    type Ns = FakeNs;

    async fn open(&self, target: &Target) -> Result<(FakeNs, NsId)> {
        let (path, what, name) = match target {
            Target::Netns(n) => (self.netns_dir.join(n), "netns", n.clone()),
            Target::NetnsPath(p) => (p.clone(), "netns path", p.display().to_string()),
            Target::Pid(p) => (
                PathBuf::from(format!("/proc/{p}/ns/net")),
                "pid",
                p.to_string(),
            ),
        };
        let id = file_id(&path).ok_or_else(|| Error::not_found(what, name))?;
        Ok((FakeNs(id), id))
    }

    fn own_namespace(&self) -> NsId {
        self.own
    }

    async fn used_networks(&self) -> Result<Vec<IpNet>> {
        Ok(self.lock().routes.clone())
    }

    async fn ensure_bridge(&self, network: &Network, mac: [u8; 6]) -> Result<BridgeInfo> {
        self.enter("ensure_bridge", &network.bridge)?;
        let mut inner = self.lock();
        let created = !inner.links.contains_key(&network.bridge);
        if let Some(l) = inner.links.get(&network.bridge) {
            if !l.bridge {
                return Err(Error::kernel(
                    format!("create bridge {:?}", network.bridge),
                    netlink_error("create bridge", &network.bridge, Errno::EEXIST),
                ));
            }
        }
        let link = inner
            .links
            .entry(network.bridge.clone())
            .or_insert_with(|| FakeLink {
                bridge: true,
                mac: Some(mac),
                ..FakeLink::default()
            });
        for gw in [
            Some(IpNet::V4(network.gateway_net())),
            network.ipv6_gateway_net().map(IpNet::V6),
        ]
        .into_iter()
        .flatten()
        {
            if !link.addresses.contains(&gw) {
                link.addresses.push(gw);
            }
        }
        let index = inner.links.len() as u32 + 1;
        Ok(BridgeInfo { index, created })
    }

    async fn delete_link(&self, name: &str) -> Result<bool> {
        self.enter("delete_link", name)?;
        self.pause("delete_link").await;
        Ok(self.lock().links.remove(name).is_some())
    }

    async fn create_docker_veth(&self, veth: &DockerVeth) -> Result<()> {
        self.enter("create_docker_veth", &veth.host_ifname)?;
        let mut inner = self.lock();
        if !inner.links.get(&veth.bridge).is_some_and(|l| l.bridge) {
            return Err(Error::Conflict(format!(
                "bridge {:?} is missing",
                veth.bridge
            )));
        }
        if inner.links.contains_key(&veth.host_ifname)
            || inner.links.contains_key(&veth.peer_ifname)
        {
            return Err(Error::Conflict(format!("{} exists", veth.host_ifname)));
        }
        inner.links.insert(
            veth.host_ifname.clone(),
            FakeLink {
                bridge: false,
                master: Some(veth.bridge.clone()),
                mac: None,
                addresses: Vec::new(),
                peer: None,
            },
        );
        Ok(())
    }

    async fn create_endpoint(&self, ns: &FakeNs, plan: &EndpointPlan) -> Result<()> {
        self.enter("create_endpoint", &plan.host_ifname)?;
        self.pause("create_endpoint").await;
        let mut inner = self.lock();
        if !inner.links.get(&plan.bridge).is_some_and(|l| l.bridge) {
            return Err(Error::Conflict(format!(
                "bridge {:?} is missing",
                plan.bridge
            )));
        }
        let clash = inner.links.contains_key(&plan.host_ifname)
            || inner.links.values().any(|l| {
                l.peer
                    .as_ref()
                    .is_some_and(|p| p.ns == ns.0 && p.ifname == plan.ifname)
            });
        if clash {
            return Err(Error::kernel(
                format!("create endpoint {}", plan.host_ifname),
                netlink_error("create veth", &plan.host_ifname, Errno::EEXIST),
            ));
        }
        inner.links.insert(
            plan.host_ifname.clone(),
            FakeLink {
                master: Some(plan.bridge.clone()),
                mac: Some(netns::paired_mac(plan.mac)),
                peer: Some(FakePeer {
                    ns: ns.0,
                    ifname: plan.ifname.clone(),
                    mac: plan.mac,
                    addresses: plan.addresses.clone(),
                    gateways: plan.gateways.clone(),
                }),
                ..FakeLink::default()
            },
        );
        Ok(())
    }

    async fn link_names(&self) -> Result<Vec<String>> {
        Ok(self.lock().links.keys().cloned().collect())
    }

    async fn host_links(&self) -> Result<Vec<HostLink>> {
        Ok(self
            .lock()
            .links
            .iter()
            .enumerate()
            .map(|(i, (name, l))| HostLink {
                name: name.clone(),
                index: i as u32 + 2,
                mac: l.mac,
                master: l.master.clone(),
                peer_elsewhere: l.peer.as_ref().map(|_| true),
                peer_index: None,
                mtu: Some(1500),
                bridge: Some(l.bridge),
            })
            .collect())
    }

    fn link_exists(&self, name: &str) -> Result<bool> {
        Ok(self.lock().links.contains_key(name))
    }

    async fn link_addresses(&self, name: &str) -> Result<Vec<IpNet>> {
        match self.lock().links.get(name) {
            Some(l) => Ok(l.addresses.clone()),
            None => Err(Error::kernel(
                format!("look up {name:?}"),
                netlink_error("get link", name, Errno::ENODEV),
            )),
        }
    }

    /// Peers are found in the fake netns directory only (as named
    /// namespaces).
    async fn find_peers(&self, links: &[HostLink]) -> Result<Vec<(String, Peer)>> {
        let named: Vec<(String, NsId)> = std::fs::read_dir(&self.netns_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                Some((name, file_id(&e.path())?))
            })
            .collect();
        let inner = self.lock();
        Ok(links
            .iter()
            .filter_map(|h| {
                let peer = inner.links.get(&h.name)?.peer.clone()?;
                let (name, _) = named.iter().find(|(_, id)| *id == peer.ns)?;
                Some((
                    h.name.clone(),
                    Peer {
                        target: Target::Netns(name.clone()),
                        netns_id: peer.ns,
                        ifname: peer.ifname,
                        mac: Some(peer.mac),
                        addresses: peer.addresses,
                        gateways: peer.gateways,
                    },
                ))
            })
            .collect())
    }

    async fn endpoint_present(&self, ns: &FakeNs, ifname: &str, address: IpNet) -> Result<bool> {
        Ok(self.lock().links.values().any(|l| {
            l.peer.as_ref().is_some_and(|p| {
                p.ns == ns.0
                    && p.ifname == ifname
                    && p.addresses.iter().any(|a| a.addr() == address.addr())
            })
        }))
    }

    async fn set_master(&self, link: &str, bridge: &str) -> Result<()> {
        let mut inner = self.lock();
        match inner.links.get_mut(link) {
            Some(l) => {
                l.master = Some(bridge.to_string());
                Ok(())
            }
            None => Err(Error::kernel(
                format!("attach {link:?} to its bridge"),
                netlink_error("set master", link, Errno::ENODEV),
            )),
        }
    }

    fn environment(&self) -> String {
        "fake".to_string()
    }
}
