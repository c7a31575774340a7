//! The real kernel, through the `netns` crate only (no netlink or setns of
//! our own).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::IpNet;
use netns::{EndpointSpec, Handle, Netns};
use nix::errno::Errno;
use tokio::sync::Semaphore;

use super::deletions::Deletions;
use super::discover::visible_namespaces;
use super::{BridgeInfo, DockerVeth, EndpointPlan, HostLink, Kernel, Peer};
use crate::error::{Error, Result};
use crate::model::{Network, NsId, Target};
use crate::platform::Platform;

/// Client-given namespace paths being opened at once (each on a blocking
/// thread), and how long one open may take: a path on a hung filesystem
/// holds its thread, never an async worker, and at most this many.
const PATH_OPENS: usize = 8;
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// Host-side handles used round-robin: each is one netlink socket, and the
/// kernel makes a veth deletion wait for an RCU grace period (tens of ms) on
/// the socket that asked, so several sockets let deletions overlap.
pub struct NetnsKernel {
    handles: Vec<Handle>,
    next: AtomicUsize,
    deletions: Deletions,
    bridges: Mutex<HashMap<String, u32>>,
    platform: Platform,
    own: NsId,
    path_opens: Arc<Semaphore>,
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
        let own = Netns::current()
            .and_then(|ns| ns.id())
            .map(|(dev, ino)| NsId { dev, ino })
            .map_err(|e| Error::kernel("identify the daemon's own namespace", e))?;
        Ok(NetnsKernel {
            handles,
            next: AtomicUsize::new(0),
            deletions: Deletions::new(connections.max(1)),
            bridges: Mutex::new(HashMap::new()),
            platform,
            own,
            path_opens: Arc::new(Semaphore::new(PATH_OPENS)),
        })
    }

    /// Open a client-given path on a blocking thread, within OPEN_TIMEOUT.
    async fn open_off_worker(&self, target: &Target) -> Result<(Netns, NsId)> {
        let waited = format!(
            "opening {} did not finish within {} s (a file on a hung filesystem?)",
            target.describe(),
            OPEN_TIMEOUT.as_secs()
        );
        let permit = tokio::time::timeout(OPEN_TIMEOUT, self.path_opens.clone().acquire_owned())
            .await
            .map_err(|_| {
                Error::Conflict(format!(
                    "{PATH_OPENS} namespace paths are still being opened; {} was not",
                    target.describe()
                ))
            })?
            .map_err(|e| Error::Internal(format!("path opener: {e}")))?;
        let owned = target.clone();
        let job = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            open_identified(&owned)
        });
        match tokio::time::timeout(OPEN_TIMEOUT, job).await {
            Ok(Ok(opened)) => opened,
            Ok(Err(e)) => Err(Error::Internal(format!("path opener: {e}"))),
            Err(_) => Err(Error::invalid("target", target.describe(), waited)),
        }
    }

    /// gVisor reports a link's MTU as configured minus 14 (the Ethernet
    /// header; docs/gvisor-quirks.md).
    fn configured_mtu(&self, reported: Option<u32>) -> Option<u32> {
        let offset = if self.platform.is_gvisor() { 14 } else { 0 };
        reported.map(|m| m + offset)
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
        let errno = e.errno();
        if matches!(errno, Some(Errno::EACCES | Errno::EPERM | Errno::EBUSY)) {
            // A file the daemon may not open, or one that is not a namespace
            // yet: under /run/netns that is one being created or deleted
            // (`ip netns add` makes it mode 0 before it binds the namespace
            // onto it).
            match target {
                Target::Netns(n) => Error::Conflict(format!(
                    "netns {n:?} cannot be opened yet ({}): it is being created or \
                     deleted, or its file under {} is not a namespace",
                    if errno == Some(Errno::EBUSY) {
                        "not a namespace file yet"
                    } else {
                        "permission denied"
                    },
                    netns::NETNS_RUN_DIR
                )),
                Target::NetnsPath(p) => Error::invalid(
                    "netns path",
                    p.display(),
                    "the daemon may not open it (permission denied); give a namespace file \
                     such as /proc/PID/ns/net or /run/netns/NAME",
                ),
                Target::Pid(p) => Error::invalid(
                    "pid",
                    p,
                    "the daemon may not open its network namespace (permission denied)",
                ),
            }
        } else if e.is_not_found() {
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

/// Open a target and say which namespace it is.
fn open_identified(target: &Target) -> Result<(Netns, NsId)> {
    let ns = open_target(target)?;
    let (dev, ino) = ns
        .id()
        .map_err(|e| Error::kernel(format!("identify {}", target.describe()), e))?;
    Ok((ns, NsId { dev, ino }))
}

fn ignore_exists(r: netns::Result<()>) -> netns::Result<()> {
    match r {
        Err(e) if e.is_already_exists() => Ok(()),
        other => other,
    }
}

impl Kernel for NetnsKernel {
    type Ns = Netns;

    async fn open(&self, target: &Target) -> Result<(Netns, NsId)> {
        match target {
            // A path from the client can be anything: a FIFO (opened
            // without blocking anyway), a file on a hung filesystem.
            Target::NetnsPath(_) => self.open_off_worker(target).await,
            // /run/netns (root's) and /proc are local kernel filesystems:
            // an open there cannot hang, and costs no thread hop.
            Target::Netns(_) | Target::Pid(_) => open_identified(target),
        }
    }

    fn own_namespace(&self) -> NsId {
        self.own
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

    async fn ensure_bridge(&self, network: &Network, mac: [u8; 6]) -> Result<BridgeInfo> {
        let h = self.handle();
        let name = &network.bridge;
        let existed = match h.link_by_name(name).await {
            Ok(_) => true,
            Err(e) if e.is_not_found() => false,
            Err(e) => return Err(Error::kernel(format!("look up bridge {name:?}"), e)),
        };
        let link = h
            .ensure_bridge_with_mac(name, Some(network.mtu), Some(mac))
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

    async fn create_docker_veth(&self, veth: &DockerVeth) -> Result<()> {
        let bridge = self.bridge_index(&veth.bridge).await?;
        // The peer is "placed" in the daemon's own namespace: one request
        // makes both ends, so a failure leaves neither.
        let own = Netns::current()
            .map_err(|e| Error::kernel("open the daemon's network namespace", e))?;
        let spec = netns::VethSpec {
            name: &veth.host_ifname,
            peer_name: &veth.peer_ifname,
            peer_ns: &own,
            master: Some(bridge),
            mtu: Some(veth.mtu),
            peer_mac: Some(veth.mac),
            up: true,
        };
        self.handle()
            .create_veth(&spec)
            .await
            .map(drop)
            .map_err(|e| {
                if e.errno() == Some(Errno::ENODEV) {
                    self.cache_bridge(&veth.bridge, None);
                }
                Error::kernel(
                    format!(
                        "create veth {} / {} on {}",
                        veth.host_ifname, veth.peer_ifname, veth.bridge
                    ),
                    e,
                )
            })
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

    async fn host_links(&self) -> Result<Vec<HostLink>> {
        let links = self
            .handle()
            .links()
            .await
            .map_err(|e| Error::kernel("list links", e))?;
        let names: HashMap<u32, String> = links.iter().map(|l| (l.index, l.name.clone())).collect();
        Ok(links
            .iter()
            .map(|l| HostLink {
                name: l.name.clone(),
                index: l.index,
                mac: l.mac.as_deref().and_then(|m| m.try_into().ok()),
                master: l.master.and_then(|m| names.get(&m).cloned()),
                peer_elsewhere: match (l.peer_netnsid, l.peer_index) {
                    (Some(_), _) => Some(true),
                    (None, Some(_)) => Some(false),
                    (None, None) => None,
                },
                peer_index: l.peer_index,
                mtu: self.configured_mtu(l.mtu),
                bridge: l.kind.as_ref().map(|k| k == "bridge"),
            })
            .collect())
    }

    fn link_exists(&self, name: &str) -> Result<bool> {
        // SIOCGIFINDEX on a socket: three cheap system calls, where a
        // netlink request costs a round trip (~1 ms in gVisor).
        match nix::net::if_::if_nametoindex(name) {
            Ok(_) => Ok(true),
            Err(Errno::ENODEV) => Ok(false),
            Err(e) => Err(Error::kernel(
                format!("look up link {name:?}"),
                netns::Error::Os {
                    op: "look up",
                    object: format!("link {name:?}"),
                    errno: e,
                },
            )),
        }
    }

    async fn link_addresses(&self, name: &str) -> Result<Vec<IpNet>> {
        let h = self.handle();
        let link = h
            .link_by_name(name)
            .await
            .map_err(|e| Error::kernel(format!("look up {name:?}"), e))?;
        Ok(h.addresses(Some(link.index))
            .await
            .map_err(|e| Error::kernel(format!("list addresses of {name:?}"), e))?
            .into_iter()
            .map(|a| a.address)
            .collect())
    }

    async fn find_peers(&self, links: &[HostLink]) -> Result<Vec<(String, Peer)>> {
        if links.is_empty() {
            return Ok(Vec::new());
        }
        let own = self.own;
        let visible = tokio::task::spawn_blocking(move || visible_namespaces(own))
            .await
            .map_err(|e| Error::Internal(format!("namespace scan: {e}")))?;
        let mut wanted: Vec<&HostLink> = links.iter().collect();
        let mut found = Vec::new();
        for v in visible {
            if wanted.is_empty() {
                break;
            }
            let inside = match Handle::open(&v.ns) {
                Ok(h) => h,
                Err(e) => {
                    tracing::debug!(target = %v.target.describe(), error = %e, "namespace not inspected");
                    continue;
                }
            };
            let Ok(inner_links) = inside.links().await else {
                continue;
            };
            for inner in inner_links {
                let Some(pos) = wanted.iter().position(|h| is_pair(h, &inner)) else {
                    continue;
                };
                let host = wanted.swap_remove(pos);
                let addresses = inside
                    .addresses(Some(inner.index))
                    .await
                    .map(|a| a.into_iter().map(|a| a.address).collect())
                    .unwrap_or_default();
                let mut gateways: Vec<IpAddr> = Vec::new();
                for v6 in [false, true] {
                    if let Ok(routes) = inside.routes(v6).await {
                        gateways.extend(
                            routes
                                .iter()
                                .filter(|r| r.destination.prefix_len() == 0)
                                .filter(|r| r.oif.is_none_or(|o| o == inner.index))
                                .filter_map(|r| r.gateway),
                        );
                    }
                }
                found.push((
                    host.name.clone(),
                    Peer {
                        target: v.target.clone(),
                        netns_id: v.id,
                        ifname: inner.name.clone(),
                        mac: inner.mac.as_deref().and_then(|m| m.try_into().ok()),
                        addresses,
                        gateways,
                    },
                ));
            }
        }
        Ok(found)
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

/// Is `inner` (a link inside some namespace) the peer of host veth `host`?
/// Where the kernel reports veth peers (Linux) both ends must name each
/// other; elsewhere (gVisor) the host end's MAC is the paired MAC of the
/// inner end's (netns gives it that at creation).
fn is_pair(host: &HostLink, inner: &netns::Link) -> bool {
    let inner_mac: Option<[u8; 6]> = inner.mac.as_deref().and_then(|m| m.try_into().ok());
    let by_mac = matches!((host.mac, inner_mac), (Some(h), Some(i)) if h == netns::paired_mac(i));
    by_mac || (inner.peer_index == Some(host.index) && host.peer_index == Some(inner.index))
}
