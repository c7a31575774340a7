//! One container endpoint: a veth pair whose host end is attached to a bridge
//! and whose other end is created inside the container's namespace, with
//! addresses, default routes and `lo` up. This is what a CNI bridge plugin's
//! ADD does, in three netlink round trips:
//! 1. host: create the veth (peer placed by namespace fd, host end attached
//!    and up) and read the host end back, in one `sendmsg`;
//! 2. namespace: look the peer up by name (gVisor reports no IFLA_LINK, so
//!    the peer's index cannot be learnt from the host end);
//! 3. namespace: lo up, peer up, addresses, routes, in one `sendmsg`.
//!
//! Any failure after step 1 deletes the pair, so nothing is left half-made.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::error::Result;
use crate::handle::Handle;
use crate::link::{Link, VethSpec};
use crate::namespace::Netns;
use crate::route::Route;

/// Index of `lo` in every network namespace (LOOPBACK_IFINDEX; gVisor too).
const LOOPBACK_INDEX: u32 = 1;

#[derive(Debug)]
pub struct EndpointSpec<'a> {
    /// Name of the host end (attached to the bridge).
    pub host_ifname: &'a str,
    /// Name inside the namespace, usually "eth0".
    pub ifname: &'a str,
    pub netns: &'a Netns,
    /// Index of the bridge in the host handle's namespace.
    pub bridge: u32,
    pub addresses: &'a [IpNet],
    /// A default route is added via each gateway.
    pub gateways: &'a [IpAddr],
    pub mtu: Option<u32>,
    pub mac: Option<[u8; 6]>,
}

/// Both ends of a created endpoint.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The host end, in the host handle's namespace.
    pub host: Link,
    /// The end inside the namespace.
    pub inner: Link,
}

/// Create an endpoint; on failure nothing of it is left behind.
pub async fn create_endpoint(host: &Handle, spec: &EndpointSpec<'_>) -> Result<Endpoint> {
    let routes: Vec<Route> = spec
        .gateways
        .iter()
        .map(|gw| Route::default_via(*gw))
        .collect();
    let host_link = host
        .create_veth(&VethSpec {
            name: spec.host_ifname,
            peer_name: spec.ifname,
            peer_ns: spec.netns,
            master: Some(spec.bridge),
            mtu: spec.mtu,
            peer_mac: spec.mac,
            up: true,
        })
        .await?;
    match configure_inside(spec, &routes).await {
        Ok(inner) => Ok(Endpoint {
            host: host_link,
            inner,
        }),
        Err(e) => {
            if let Err(cleanup) = host.delete_link(host_link.index).await {
                if !cleanup.is_not_found() {
                    tracing::warn!(error = %cleanup, "rollback of {} failed", spec.host_ifname);
                }
            }
            Err(e)
        }
    }
}

async fn configure_inside(spec: &EndpointSpec<'_>, routes: &[Route]) -> Result<Link> {
    let inside = Handle::open(spec.netns)?;
    let mut inner = inside.link_by_name(spec.ifname).await?;
    let mut batch = inside
        .batch()
        .set_up(LOOPBACK_INDEX, true)
        .set_up(inner.index, true);
    for addr in spec.addresses {
        batch = batch.add_address(inner.index, *addr);
    }
    for route in routes {
        batch = batch.add_route(route)?;
    }
    batch.commit().await?;
    inner.up = true;
    Ok(inner)
}

/// Remove an endpoint by its host end; deleting one end of a veth deletes
/// both. An endpoint that is already gone is NotFound.
pub async fn delete_endpoint(host: &Handle, host_ifname: &str) -> Result<()> {
    let link = host.link_by_name(host_ifname).await?;
    host.delete_link(link.index).await
}
