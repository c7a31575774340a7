//! Routes in the main table: default routes via a gateway and on-link routes.

use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::error::{Error, Result};
use crate::handle::{Batch, Handle, Op};

/// A route in the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Must be a network address (no host bits set).
    pub destination: IpNet,
    /// None for an on-link route.
    pub gateway: Option<IpAddr>,
    /// Output interface; required for on-link routes.
    pub oif: Option<u32>,
}

impl Route {
    /// `default via GATEWAY`.
    pub fn default_via(gateway: IpAddr) -> Route {
        let destination = match gateway {
            IpAddr::V4(_) => IpNet::V4(Default::default()),
            IpAddr::V6(_) => IpNet::V6(Default::default()),
        };
        Route {
            destination,
            gateway: Some(gateway),
            oif: None,
        }
    }

    /// `DESTINATION dev OIF` (scope link).
    pub fn on_link(destination: IpNet, oif: u32) -> Route {
        Route {
            destination,
            gateway: None,
            oif: Some(oif),
        }
    }

    fn validate(&self) -> Result<()> {
        if self.destination.trunc() != self.destination {
            return Err(Error::invalid(
                "route destination",
                self.destination.to_string(),
                format!(
                    "host bits set (the network is {})",
                    self.destination.trunc()
                ),
            ));
        }
        match self.gateway {
            Some(gw) if gw.is_ipv4() != self.destination.addr().is_ipv4() => Err(Error::invalid(
                "gateway",
                gw.to_string(),
                format!("not of the family of {}", self.destination),
            )),
            None if self.oif.is_none() => Err(Error::invalid(
                "route",
                self.destination.to_string(),
                "needs a gateway or an output interface",
            )),
            _ => Ok(()),
        }
    }

    fn describe(&self) -> String {
        let mut s = self.destination.to_string();
        if let Some(gw) = self.gateway {
            s.push_str(&format!(" via {gw}"));
        }
        if let Some(oif) = self.oif {
            s.push_str(&format!(" dev #{oif}"));
        }
        s
    }

    fn message(&self) -> RouteMessage {
        let mut msg = RouteMessage::default();
        msg.header.address_family = match self.destination {
            IpNet::V4(_) => AddressFamily::Inet,
            IpNet::V6(_) => AddressFamily::Inet6,
        };
        msg.header.destination_prefix_length = self.destination.prefix_len();
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Boot;
        msg.header.kind = RouteType::Unicast;
        msg.header.scope = if self.gateway.is_some() {
            RouteScope::Universe
        } else {
            RouteScope::Link
        };
        if self.destination.prefix_len() > 0 {
            msg.attributes
                .push(RouteAttribute::Destination(RouteAddress::from(
                    self.destination.addr(),
                )));
        }
        if let Some(gw) = self.gateway {
            msg.attributes
                .push(RouteAttribute::Gateway(RouteAddress::from(gw)));
        }
        if let Some(oif) = self.oif {
            msg.attributes.push(RouteAttribute::Oif(oif));
        }
        msg
    }

    fn from_message(msg: &RouteMessage) -> Option<Route> {
        let mut dest = None;
        let mut gateway = None;
        let mut oif = None;
        let mut table = u32::from(msg.header.table);
        for attr in &msg.attributes {
            match attr {
                RouteAttribute::Destination(a) => dest = route_ip(a),
                RouteAttribute::Gateway(a) => gateway = route_ip(a),
                RouteAttribute::Oif(i) => oif = Some(*i),
                RouteAttribute::Table(t) => table = *t,
                _ => {}
            }
        }
        if table != u32::from(RouteHeader::RT_TABLE_MAIN) || msg.header.kind != RouteType::Unicast {
            return None;
        }
        let ip = dest.unwrap_or(match msg.header.address_family {
            AddressFamily::Inet6 => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
            _ => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        });
        Some(Route {
            destination: IpNet::new(ip, msg.header.destination_prefix_length).ok()?,
            gateway,
            oif,
        })
    }
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

pub(crate) fn add_op(route: &Route) -> Result<Op> {
    route.validate()?;
    Ok(Op::ack(
        RouteNetlinkMessage::NewRoute(route.message()),
        NLM_F_CREATE | NLM_F_EXCL,
        "add route",
        route.describe(),
    ))
}

impl Handle {
    /// Add a route; one that is already there is AlreadyExists.
    pub async fn add_route(&self, route: &Route) -> Result<()> {
        self.run(add_op(route)?).await.map(drop)
    }

    /// Delete a route; one that is not there is NotFound. (gVisor 20240729
    /// does not implement RTM_DELROUTE: that is an Unsupported error.)
    pub async fn delete_route(&self, route: &Route) -> Result<()> {
        route.validate()?;
        self.run(Op::ack(
            RouteNetlinkMessage::DelRoute(route.message()),
            0,
            "delete route",
            route.describe(),
        ))
        .await
        .map(drop)
    }

    /// Unicast routes of the main table for one address family.
    pub async fn routes(&self, ipv6: bool) -> Result<Vec<Route>> {
        let mut req = RouteMessage::default();
        req.header.address_family = if ipv6 {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        let replies = self
            .run(Op::dump(
                RouteNetlinkMessage::GetRoute(req),
                "list routes in",
                self.namespace().to_string(),
            ))
            .await?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => Route::from_message(r),
                _ => None,
            })
            .filter(|r| r.destination.addr().is_ipv6() == ipv6)
            .collect())
    }
}

impl Batch<'_> {
    /// Queue a route; an invalid route is reported when the batch commits.
    pub fn add_route(self, route: &Route) -> Result<Self> {
        Ok(self.push(add_op(route)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_bits_in_destination_are_refused_by_value() {
        let route = Route::on_link("10.1.2.3/24".parse().unwrap(), 2);
        let err = add_op(&route).unwrap_err();
        assert!(err.to_string().contains("10.1.2.3/24"), "{err}");
        assert!(err.to_string().contains("10.1.2.0/24"), "{err}");
    }

    #[test]
    fn default_route_round_trips() {
        let route = Route::default_via("10.0.0.1".parse().unwrap());
        assert_eq!(Route::from_message(&route.message()), Some(route.clone()));
        assert!(add_op(&route).is_ok());
        let v6 = Route::default_via("fd00::1".parse().unwrap());
        assert_eq!(Route::from_message(&v6.message()), Some(v6));
    }

    #[test]
    fn mixed_families_are_refused() {
        let mut route = Route::default_via("10.0.0.1".parse().unwrap());
        route.destination = "fd00::/64".parse().unwrap();
        assert!(add_op(&route).is_err());
    }
}
