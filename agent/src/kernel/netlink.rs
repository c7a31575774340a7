//! The real kernel, through the `netns` crate only (no netlink or setns of
//! our own).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use ipnet::IpNet;
use netns::{EndpointSpec, Handle, Netns};

use super::deletions::Deletions;
use super::{BridgeInfo, EndpointPlan, Kernel};
use crate::error::{Error, Result};
use crate::model::{Network, NsId, Target};
use crate::platform::Platform;

/// Host-side handles used round-robin: each is one netlink socket, and the
/// kernel makes a veth deletion wait for an RCU grace period (tens of ms) on
/// the socket that asked, so several sockets let deletions overlap.
pub struct NetnsKernel {
    handles: Vec<Handle>,
    next: AtomicUsize,
    deletions: Deletions,
    bridges: Mutex<HashMap<String, u32>>,
    platform: Platform,
}

impl NetnsKernel {
    /// Open `connections` netlink sockets in the calling thread's namespace.
    /// Needs a tokio runtime.
    pub fn new(connections: usize, platform: Platform) -> Result<NetnsKernel> {
        let mut handles = Vec::with_capacity(connections.max(1));
        for _ in 0..connections.max(1) {
            handles.push(
                Handle::current().map_err(|e| Error::kernel("open a netlink connection", e))?,
            );
        }
        Ok(NetnsKernel {
            handles,
            next: AtomicUsize::new(0),
            deletions: Deletions::new(connections.max(1)),
            bridges: Mutex::new(HashMap::new()),
            platform,
        })
    }

    fn handle(&self) -> &Handle {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        &self.handles[i]
    }

    fn cached_bridge(&self, name: &str) -> Option<u32> {
        self.bridges.lock().ok()?.get(name).copied()
    }

    fn cache_bridge(&self, name: &str, index: Option<u32>) {
        if let Ok(mut map) = self.bridges.lock() {
            match index {
                Some(i) => map.insert(name.to_string(), i),
                None => map.remove(name),
            };
        }
    }

    async fn bridge_index(&self, name: &str) -> Result<u32> {
        if let Some(i) = self.cached_bridge(name) {
            return Ok(i);
        }
        let link = self.handle().link_by_name(name).await.map_err(|e| {
            if e.is_not_found() {
                Error::Conflict(format!(
                    "bridge {name:?} is missing (restart conductor-netd to recreate it)"
                ))
            } else {
                Error::kernel(format!("look up bridge {name:?}"), e)
            }
        })?;
        self.cache_bridge(name, Some(link.index));
        Ok(link.index)
    }
}

/// Open a target's namespace, turning "not there" into a NotFound that
/// names the target.
pub fn open_target(target: &Target) -> Result<Netns> {
    let opened = match target {
        Target::Netns(n) => Netns::open(n),
        Target::NetnsPath(p) => Netns::open_path(p),
        Target::Pid(p) => Netns::open_pid(*p),
    };
    opened.map_err(|e| {
        if e.is_not_found() {
            match target {
                Target::Netns(n) => Error::not_found("netns", n.clone()),
                Target::NetnsPath(p) => Error::not_found("netns path", p.display().to_string()),
                Target::Pid(p) => Error::not_found("pid", p.to_string()),
            }
        } else if e.kind() == netns::ErrorKind::InvalidInput {
            Error::invalid("target", target.describe(), e.to_string())
        } else {
            Error::kernel(format!("open {}", target.describe()), e)
        }
    })
}

fn ignore_exists(r: netns::Result<()>) -> netns::Result<()> {
    match r {
        Err(e) if e.is_already_exists() => Ok(()),
        other => other,
    }
}

impl Kernel for NetnsKernel {
    type Ns = Netns;

    fn open(&self, target: &Target) -> Result<(Netns, NsId)> {
        let ns = open_target(target)?;
        let (dev, ino) = ns
            .id()
            .map_err(|e| Error::kernel(format!("identify {}", target.describe()), e))?;
        Ok((ns, NsId { dev, ino }))
    }

    async fn used_networks(&self) -> Result<Vec<IpNet>> {
        let h = self.handle();
        let mut used: Vec<IpNet> = h
            .routes(false)
            .await
            .map_err(|e| Error::kernel("list routes", e))?
            .into_iter()
            .map(|r| r.destination)
            .collect();
        used.extend(
            h.addresses(None)
                .await
                .map_err(|e| Error::kernel("list addresses", e))?
                .into_iter()
                .filter(|a| a.address.addr().is_ipv4())
                .map(|a| a.address.trunc()),
        );
        Ok(used)
    }

    async fn ensure_bridge(&self, network: &Network) -> Result<BridgeInfo> {
        let h = self.handle();
        let name = &network.bridge;
        let existed = match h.link_by_name(name).await {
            Ok(_) => true,
            Err(e) if e.is_not_found() => false,
            Err(e) => return Err(Error::kernel(format!("look up bridge {name:?}"), e)),
        };
        let link = h
            .ensure_bridge(name, Some(network.mtu))
            .await
            .map_err(|e| Error::kernel(format!("create bridge {name:?}"), e))?;
        ignore_exists(
            h.add_address(link.index, IpNet::V4(network.gateway_net()))
                .await,
        )
        .map_err(|e| Error::kernel(format!("add gateway address to {name:?}"), e))?;
        if let Some(gw6) = network.ipv6_gateway_net() {
            ignore_exists(h.add_address(link.index, IpNet::V6(gw6)).await)
                .map_err(|e| Error::kernel(format!("add IPv6 gateway address to {name:?}"), e))?;
        }
        self.cache_bridge(name, Some(link.index));
        Ok(BridgeInfo {
            index: link.index,
            created: !existed,
        })
    }

    /// Deletions wait in the kernel for an RCU grace period: see
    /// `deletions`.
    async fn delete_link(&self, name: &str) -> Result<bool> {
        self.cache_bridge(name, None);
        self.deletions.delete_link(name).await
    }

    async fn create_endpoint(&self, ns: &Netns, plan: &EndpointPlan) -> Result<()> {
        let bridge = self.bridge_index(&plan.bridge).await?;
        let spec = EndpointSpec {
            host_ifname: &plan.host_ifname,
            ifname: &plan.ifname,
            netns: ns,
            bridge,
            addresses: &plan.addresses,
            gateways: &plan.gateways,
            mtu: Some(plan.mtu),
            mac: Some(plan.mac),
        };
        let result = netns::create_endpoint(self.handle(), &spec).await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => {
                if e.errno() == Some(nix::errno::Errno::ENODEV) {
                    // The cached bridge index may be stale.
                    self.cache_bridge(&plan.bridge, None);
                }
                let hint = if e.is_already_exists() {
                    format!(
                        " ({:?} already exists in {}, or it already has a default route: \
                         pick another --ifname or use --no-default-route)",
                        plan.ifname,
                        ns.describe()
                    )
                } else {
                    String::new()
                };
                Err(Error::kernel(
                    format!(
                        "create endpoint {} -> {:?} in {}{hint}",
                        plan.host_ifname,
                        plan.ifname,
                        ns.describe()
                    ),
                    e,
                ))
            }
        }
    }

    async fn link_names(&self) -> Result<Vec<String>> {
        Ok(self
            .handle()
            .links()
            .await
            .map_err(|e| Error::kernel("list links", e))?
            .into_iter()
            .map(|l| l.name)
            .collect())
    }

    async fn endpoint_present(&self, ns: &Netns, ifname: &str, address: IpNet) -> Result<bool> {
        let inside = Handle::open(ns).map_err(|e| Error::kernel("open netlink in namespace", e))?;
        let link = match inside.link_by_name(ifname).await {
            Ok(l) => l,
            Err(e) if e.is_not_found() => return Ok(false),
            Err(e) => {
                return Err(Error::kernel(
                    format!("look up {ifname:?} in {}", ns.describe()),
                    e,
                ))
            }
        };
        let addrs = inside
            .addresses(Some(link.index))
            .await
            .map_err(|e| Error::kernel(format!("list addresses in {}", ns.describe()), e))?;
        Ok(addrs.iter().any(|a| a.address.addr() == address.addr()))
    }

    async fn set_master(&self, link: &str, bridge: &str) -> Result<()> {
        let h = self.handle();
        let bridge = self.bridge_index(bridge).await?;
        let l = h
            .link_by_name(link)
            .await
            .map_err(|e| Error::kernel(format!("look up {link:?}"), e))?;
        h.set_master(l.index, Some(bridge))
            .await
            .map_err(|e| Error::kernel(format!("attach {link:?} to its bridge"), e))
    }

    fn environment(&self) -> String {
        self.platform.kind.clone()
    }
}
