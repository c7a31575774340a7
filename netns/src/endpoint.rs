//! One container endpoint: a veth pair whose host end is attached to a bridge
//! and whose other end is created inside the container's namespace, with
//! addresses, default routes and `lo` up. This is what a CNI bridge plugin's
//! ADD does, in two netlink round trips on Linux and three in gVisor:
//! 1. host: create the veth (peer placed by namespace fd, host end attached
//!    and up) and read the host end back, in one `sendmsg`; on Linux its
//!    IFLA_LINK is the peer's index inside the namespace;
//! 2. (gVisor only, which reports no IFLA_LINK) namespace: look the peer up
//!    by name;
//! 3. namespace: lo up, peer up, addresses, routes, and the peer read back,
//!    in one `sendmsg`.
//!
//! Any failure after step 1 deletes the pair, so nothing is left half-made.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::error::{Error, Result};
use crate::handle::Handle;
use crate::link::{get_by_index_op, set_up_op, single_link, Link, VethSpec};
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
    match configure_inside(spec, &routes, host_link.peer_index).await {
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

async fn configure_inside(
    spec: &EndpointSpec<'_>,
    routes: &[Route],
    peer_index: Option<u32>,
) -> Result<Link> {
    let inside = Handle::open(spec.netns)?;
    let index = match peer_index {
        Some(index) => index,
        None => inside.link_by_name(spec.ifname).await?.index,
    };
    let mut ops = vec![set_up_op(LOOPBACK_INDEX, true), set_up_op(index, true)];
    ops.extend(
        spec.addresses
            .iter()
            .map(|a| crate::address::add_op(index, *a)),
    );
    for route in routes {
        ops.push(crate::route::add_op(route)?);
    }
    ops.push(get_by_index_op(index));
    let mut last = Vec::new();
    for result in inside.run_all(&ops).await? {
        last = result?;
    }
    let inner = single_link(last, spec.ifname)?;
    if inner.name != spec.ifname {
        return Err(Error::protocol(
            "configure",
            spec.ifname,
            format!("link #{index} inside is {:?}", inner.name),
        ));
    }
    Ok(inner)
}

/// Remove an endpoint by its host end; deleting one end of a veth deletes
/// both. An endpoint that is already gone is NotFound.
pub async fn delete_endpoint(host: &Handle, host_ifname: &str) -> Result<()> {
    let link = host.link_by_name(host_ifname).await?;
    host.delete_link(link.index).await
}
