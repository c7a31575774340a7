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
//!
//! The namespace end gets an IPv6 link-local address only when the endpoint
//! has an IPv6 address (as Docker disables IPv6 on an IPv4-only network's
//! interface). Otherwise every new interface sends MLD reports, DAD and
//! router solicitations that the bridge floods to every port: quadratic in
//! the number of endpoints, ~6,000 frames per port at 1,000 ports, which
//! made each attach 4x slower there.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::error::{Error, ErrorKind, Result};
use crate::handle::Handle;
use crate::link::{get_by_index_op, no_ipv6_link_local_op, set_up_op, single_link, Link, VethSpec};
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
    match configure_inside(spec, host_link.peer_index).await {
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

async fn configure_inside(spec: &EndpointSpec<'_>, peer_index: Option<u32>) -> Result<Link> {
    let inside = Handle::open(spec.netns)?;
    let index = match peer_index {
        Some(index) => index,
        None => inside.link_by_name(spec.ifname).await?.index,
    };
    let mut ops = vec![set_up_op(LOOPBACK_INDEX, true)];
    // Before the link goes up: the address is made when it does.
    let no_link_local_at = if spec.addresses.iter().any(|a| a.addr().is_ipv6()) {
        None
    } else {
        ops.push(no_ipv6_link_local_op(index));
        Some(ops.len() - 1)
    };
    ops.push(set_up_op(index, true));
    ops.extend(
        spec.addresses
            .iter()
            .map(|a| crate::address::add_op(index, *a)),
    );
    for gateway in spec.gateways {
        // With the interface: gVisor routes nothing through a default route
        // without one, and keeps it after the link is gone.
        let mut route = Route::default_via(*gateway);
        route.oif = Some(index);
        ops.push(crate::route::add_op(&route)?);
    }
    ops.push(get_by_index_op(index));
    let mut last = Vec::new();
    for (i, result) in inside.run_all(&ops).await?.into_iter().enumerate() {
        match result {
            // A stack without IPv6, or one that takes no IFLA_AF_SPEC
            // (gVisor), makes no link-local address anyway.
            Err(e) if Some(i) == no_link_local_at && e.kind() == ErrorKind::Unsupported => {}
            result => last = result?,
        }
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
