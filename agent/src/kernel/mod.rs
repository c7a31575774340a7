//! What the service needs from the kernel, as one small trait (a leaf:
//! the implementations depend on it). `netlink::NetnsKernel` goes through
//! the `netns` crate only; `fake::FakeKernel` keeps everything in memory so
//! the service and the API can be tested, and run, without privileges (built
//! only for tests and with the `testing` feature).

mod deletions;
mod discover;
#[cfg(any(test, feature = "testing"))]
pub mod fake;
mod netlink;

pub use netlink::{open_target, NetnsKernel};

use std::future::Future;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::error::Result;
use crate::model::{Network, NsId, Target};

/// A link in the daemon's namespace, with what reconciliation needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostLink {
    pub name: String,
    pub index: u32,
    pub mac: Option<[u8; 6]>,
    /// Its bridge's name, where the kernel reports it (gVisor does not).
    pub master: Option<String>,
    /// For a veth: whether its peer lives in another, live namespace,
    /// where the kernel says so (Linux: IFLA_LINK_NETNSID); None where it
    /// does not (gVisor).
    pub peer_elsewhere: Option<bool>,
    /// For a veth: its peer's index inside the peer's namespace, where the
    /// kernel reports it (Linux: IFLA_LINK).
    pub peer_index: Option<u32>,
    /// MTU as configured (gVisor's report corrected, see docs/gvisor-quirks.md).
    pub mtu: Option<u32>,
    /// A bridge, where the kernel says so (gVisor reports no kind).
    pub bridge: Option<bool>,
}

/// The other end of a host veth, found inside a namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// How to name the namespace: a name under /run/netns if it has one,
    /// else a bind-mounted namespace file, else a process living in it.
    pub target: Target,
    pub netns_id: NsId,
    pub ifname: String,
    pub mac: Option<[u8; 6]>,
    pub addresses: Vec<IpNet>,
    /// Gateways of default routes through this interface.
    pub gateways: Vec<IpAddr>,
}

/// Everything needed to create one endpoint.
#[derive(Debug, Clone)]
pub struct EndpointPlan {
    pub host_ifname: String,
    pub ifname: String,
    pub bridge: String,
    pub addresses: Vec<IpNet>,
    /// A default route is added via each gateway.
    pub gateways: Vec<IpAddr>,
    pub mtu: u32,
    pub mac: [u8; 6],
}

/// A veth pair for Docker's network plugin: `host_ifname` on the bridge
/// and up, `peer_ifname` left in the daemon's namespace (down, with `mac`)
/// for Docker to move into the container when it starts.
#[derive(Debug, Clone)]
pub struct DockerVeth {
    pub host_ifname: String,
    pub peer_ifname: String,
    pub bridge: String,
    pub mtu: u32,
    pub mac: [u8; 6],
}

/// What ensuring a bridge found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BridgeInfo {
    pub index: u32,
    /// False when the bridge was already there.
    pub created: bool,
}

/// The kernel operations the service uses. Every method is idempotent where
/// the name says so, and reports what it found rather than failing on
/// "already there" / "already gone".
pub trait Kernel: Send + Sync + 'static {
    /// An open network namespace; holding it keeps the namespace alive, so
    /// the service drops it as soon as a request is done.
    type Ns: Send + Sync + 'static;

    /// Open the namespace of a target and say which namespace it is. Never
    /// blocks the caller on a path (a FIFO, a hung filesystem): what could
    /// block runs off the async workers, with a time limit.
    fn open(&self, target: &Target) -> impl Future<Output = Result<(Self::Ns, NsId)>> + Send;

    /// The daemon's own network namespace.
    fn own_namespace(&self) -> NsId;

    /// Networks already in use in the daemon's namespace: destinations of
    /// IPv4 routes and subnets of IPv4 addresses. Automatic subnets avoid them.
    fn used_networks(&self) -> impl Future<Output = Result<Vec<IpNet>>> + Send;

    /// Create the network's bridge (up, with the gateway addresses, and
    /// `mac` when it is new), or complete an existing one.
    fn ensure_bridge(
        &self,
        network: &Network,
        mac: [u8; 6],
    ) -> impl Future<Output = Result<BridgeInfo>> + Send;

    /// Delete a link in the daemon's namespace by name; Ok(false) if it was
    /// already gone. Deleting one end of a veth deletes both.
    fn delete_link(&self, name: &str) -> impl Future<Output = Result<bool>> + Send;

    /// Create an endpoint; on failure nothing of it is left behind.
    fn create_endpoint(
        &self,
        ns: &Self::Ns,
        plan: &EndpointPlan,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Create a [`DockerVeth`]; on failure nothing of it is left behind.
    fn create_docker_veth(&self, veth: &DockerVeth) -> impl Future<Output = Result<()>> + Send;

    /// Names of the links in the daemon's namespace.
    fn link_names(&self) -> impl Future<Output = Result<Vec<String>>> + Send;

    /// The links in the daemon's namespace, with details.
    fn host_links(&self) -> impl Future<Output = Result<Vec<HostLink>>> + Send;

    /// Does a link of this name exist in the daemon's namespace? Cheap
    /// (no netlink round trip): asked on every repeated attach.
    fn link_exists(&self, name: &str) -> Result<bool>;

    /// Addresses on a link of the daemon's namespace.
    fn link_addresses(&self, name: &str) -> impl Future<Output = Result<Vec<IpNet>>> + Send;

    /// Find the peers of host veths in every namespace the daemon can see
    /// (named, bind-mounted, or of a live process): pairs of (host link
    /// name, peer). Links whose peer is not found are not in the answer.
    fn find_peers(
        &self,
        links: &[HostLink],
    ) -> impl Future<Output = Result<Vec<(String, Peer)>>> + Send;

    /// Is `ifname` inside `ns` there with `address` on it?
    fn endpoint_present(
        &self,
        ns: &Self::Ns,
        ifname: &str,
        address: IpNet,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Attach a host link to a bridge (used after a bridge was recreated).
    fn set_master(&self, link: &str, bridge: &str) -> impl Future<Output = Result<()>> + Send;

    /// Which environment this is, for `status` ("kernel", "gvisor", "fake").
    fn environment(&self) -> String;
}
