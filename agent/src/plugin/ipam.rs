//! The IPAM driver (`--ipam-driver conductor`): pools are subnets checked
//! by netd's rules (special ranges refused, no overlap with netd's networks
//! or the sandbox's routes); addresses skip the gateway and every address
//! netd's endpoints hold on a network of that subnet.

use std::net::Ipv4Addr;

use ipnet::{IpNet, Ipv4Net};

use super::state::{PluginPool, PluginState};
use crate::error::{Error, Result};
use crate::ipam;

/// What netd already has, for choosing pools and addresses.
#[derive(Debug, Clone, Default)]
pub struct Taken {
    /// Subnets of netd's networks and routes of the sandbox.
    pub subnets: Vec<IpNet>,
    /// Addresses of netd's endpoints and gateways on the pool's subnet.
    pub addresses: Vec<Ipv4Addr>,
}

/// Where automatic pools come from: netd's pool and prefix.
#[derive(Debug, Clone, Copy)]
pub struct AutoPool {
    pub pool: Ipv4Net,
    pub prefix: u8,
}

/// An address as Docker sends it: `a.b.c.d` or `a.b.c.d/len`.
fn host_address(text: &str) -> Result<Ipv4Addr> {
    text.split('/')
        .next()
        .unwrap_or_default()
        .parse()
        .map_err(|_| Error::invalid("address", text, "not an IPv4 address"))
}

impl PluginState {
    /// RequestPool: `requested` (a CIDR) or, when empty, a free subnet.
    /// The pool id is the subnet.
    pub fn request_pool(
        &mut self,
        requested: &str,
        adopted: Option<Ipv4Net>,
        taken: &Taken,
        auto: AutoPool,
    ) -> Result<Ipv4Net> {
        let subnet = if let Some(net) = adopted {
            if !requested.is_empty() && ipam::parse_subnet_v4(requested)? != net {
                return Err(Error::invalid(
                    "pool",
                    requested,
                    format!("the conductor network named has the subnet {net}"),
                ));
            }
            net
        } else if requested.is_empty() {
            let mut blocking = taken.subnets.clone();
            blocking.extend(self.pools.values().map(|p| IpNet::V4(p.subnet)));
            ipam::pick_subnet(auto.pool, auto.prefix, &blocking)?
        } else {
            let net = ipam::parse_subnet_v4(requested)?;
            if let Some(t) = taken
                .subnets
                .iter()
                .find(|t| t.prefix_len() > 0 && ipam::overlaps(&IpNet::V4(net), t))
            {
                return Err(Error::Conflict(format!(
                    "pool {net} overlaps {t}, a conductor network or a route of this machine"
                )));
            }
            net
        };
        if self.pools.contains_key(&subnet.to_string()) {
            return Err(Error::Conflict(format!(
                "pool {subnet} is already used by another Docker network"
            )));
        }
        self.pools.insert(
            subnet.to_string(),
            PluginPool {
                subnet,
                addresses: Default::default(),
            },
        );
        Ok(subnet)
    }

    pub fn release_pool(&mut self, pool_id: &str) -> bool {
        self.pools.remove(pool_id).is_some()
    }

    /// RequestAddress: the gateway, the address asked for, or the lowest
    /// free one; each is reserved until ReleaseAddress.
    pub fn request_address(
        &mut self,
        pool_id: &str,
        requested: &str,
        gateway: bool,
        taken: &Taken,
    ) -> Result<Ipv4Net> {
        let pool = self.pools.get_mut(pool_id).ok_or_else(|| Error::NotFound {
            what: "IPAM pool",
            name: pool_id.to_string(),
        })?;
        let subnet = pool.subnet;
        let with_prefix = |a: Ipv4Addr| Ipv4Net::new(a, subnet.prefix_len()).unwrap_or(subnet);
        if gateway {
            let gw = ipam::gateway_v4(subnet, (!requested.is_empty()).then_some(requested))?;
            pool.addresses.insert(gw);
            return Ok(with_prefix(gw));
        }
        let in_use = |a: &Ipv4Addr, pool: &PluginPool| {
            pool.addresses.contains(a) || taken.addresses.contains(a)
        };
        if !requested.is_empty() {
            let addr = host_address(requested)?;
            if !subnet.contains(&addr) || addr == subnet.network() || addr == subnet.broadcast() {
                return Err(Error::invalid(
                    "address",
                    requested,
                    format!("not a host address of {subnet}"),
                ));
            }
            if in_use(&addr, pool) {
                return Err(Error::Conflict(format!("address {addr} is already in use")));
            }
            pool.addresses.insert(addr);
            return Ok(with_prefix(addr));
        }
        let first = u32::from(subnet.network()).saturating_add(1);
        let last = u32::from(subnet.broadcast()).saturating_sub(1);
        let free = (first..=last)
            .map(Ipv4Addr::from)
            .find(|a| !in_use(a, pool))
            .ok_or_else(|| Error::Exhausted(format!("no free address left in {subnet}")))?;
        pool.addresses.insert(free);
        Ok(with_prefix(free))
    }

    pub fn release_address(&mut self, pool_id: &str, address: &str) -> Result<bool> {
        let addr = host_address(address)?;
        Ok(self
            .pools
            .get_mut(pool_id)
            .is_some_and(|p| p.addresses.remove(&addr)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taken_subnet(subnet: &str) -> Taken {
        Taken {
            subnets: vec![subnet.parse().unwrap()],
            addresses: vec![],
        }
    }

    fn auto() -> AutoPool {
        AutoPool {
            pool: "10.210.0.0/16".parse().unwrap(),
            prefix: 24,
        }
    }

    #[test]
    fn automatic_pool_avoids_taken_subnets_and_other_pools() {
        let mut s = PluginState::default();
        let taken = taken_subnet("10.210.0.0/24");
        let a = s.request_pool("", None, &taken, auto()).unwrap();
        let b = s.request_pool("", None, &taken, auto()).unwrap();
        assert_eq!(a.to_string(), "10.210.1.0/24");
        assert_eq!(b.to_string(), "10.210.2.0/24");
    }

    #[test]
    fn requested_pools_are_checked() {
        let mut s = PluginState::default();
        let taken = taken_subnet("10.9.0.0/16");
        for bad in ["224.0.0.0/24", "10.9.3.0/24", "nonsense"] {
            let before = s.clone();
            assert!(s.request_pool(bad, None, &taken, auto()).is_err(), "{bad}");
            assert_eq!(s, before, "{bad} left state changed");
        }
        s.request_pool("10.20.0.0/24", None, &taken, auto())
            .unwrap();
        let e = s
            .request_pool("10.20.0.0/24", None, &taken, auto())
            .unwrap_err();
        assert!(e.to_string().contains("10.20.0.0/24"), "{e}");
    }

    #[test]
    fn addresses_skip_gateway_reserved_and_netd_endpoints() {
        let mut s = PluginState::default();
        let none = Taken::default();
        let pool = s.request_pool("10.30.0.0/29", None, &none, auto()).unwrap();
        let id = pool.to_string();
        let gw = s.request_address(&id, "", true, &none).unwrap();
        assert_eq!(gw.to_string(), "10.30.0.1/29");
        let taken = Taken {
            subnets: vec![],
            addresses: vec!["10.30.0.1".parse().unwrap(), "10.30.0.2".parse().unwrap()],
        };
        let a = s.request_address(&id, "", false, &taken).unwrap();
        assert_eq!(a.to_string(), "10.30.0.3/29");
        assert!(s.request_address(&id, "10.30.0.3", false, &taken).is_err());
        assert!(s.request_address(&id, "10.30.0.7", false, &taken).is_err());
        assert!(s.request_address(&id, "10.31.0.4", false, &taken).is_err());
        assert_eq!(
            s.request_address(&id, "10.30.0.5", false, &taken)
                .unwrap()
                .to_string(),
            "10.30.0.5/29"
        );
        assert!(s.release_address(&id, "10.30.0.3/29").unwrap());
        assert_eq!(
            s.request_address(&id, "", false, &taken)
                .unwrap()
                .to_string(),
            "10.30.0.3/29"
        );
        s.request_address(&id, "", false, &taken).unwrap(); // .4
        s.request_address(&id, "", false, &taken).unwrap(); // .6
        let e = s.request_address(&id, "", false, &taken).unwrap_err();
        assert!(e.to_string().contains("10.30.0.0/29"), "{e}");
        assert!(s
            .request_address("10.99.0.0/24", "", false, &taken)
            .is_err());
    }
}
