//! What the service needs from the kernel, as one small trait (a leaf:
//! the implementations depend on it). `netlink::NetnsKernel` goes through
//! the `netns` crate only; `fake::FakeKernel` keeps everything in memory so
//! the service and the API can be tested, and run, without privileges (built
//! only for tests and with the `testing` feature).

mod deletions;
#[cfg(any(test, feature = "testing"))]
pub mod fake;
mod netlink;

pub use netlink::{open_target, NetnsKernel};

use std::future::Future;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::error::Result;
use crate::model::{Network, NsId, Target};

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

    /// Open the namespace of a target and say which namespace it is.
    fn open(&self, target: &Target) -> Result<(Self::Ns, NsId)>;

    /// Networks already in use in the daemon's namespace: destinations of
    /// IPv4 routes and subnets of IPv4 addresses. Automatic subnets avoid them.
    fn used_networks(&self) -> impl Future<Output = Result<Vec<IpNet>>> + Send;

    /// Create the network's bridge (up, with the gateway addresses), or
    /// complete an existing one.
    fn ensure_bridge(&self, network: &Network) -> impl Future<Output = Result<BridgeInfo>> + Send;

    /// Delete a link in the daemon's namespace by name; Ok(false) if it was
    /// already gone. Deleting one end of a veth deletes both.
    fn delete_link(&self, name: &str) -> impl Future<Output = Result<bool>> + Send;

    /// Create an endpoint; on failure nothing of it is left behind.
    fn create_endpoint(
        &self,
        ns: &Self::Ns,
        plan: &EndpointPlan,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Names of the links in the daemon's namespace.
    fn link_names(&self) -> impl Future<Output = Result<Vec<String>>> + Send;

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
