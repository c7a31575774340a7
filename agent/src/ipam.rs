//! Address management: choosing a free subnet from the pool, checking a
//! requested one, and handing out addresses inside a subnet without ever
//! giving the same address to two endpoints.
//!
//! Addresses are kept as offsets from the subnet's network address (u128, so
//! IPv4 and IPv6 share the code). Allocation is next-fit: it continues after
//! the last address handed out and wraps around, so a just-freed address is
//! not reused at once (stale ARP/neighbour entries elsewhere age out first).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::error::{Error, Result};

/// Do two networks share any address?
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    match (a, b) {
        (IpNet::V4(_), IpNet::V4(_)) | (IpNet::V6(_), IpNet::V6(_)) => {
            a.contains(&b.network()) || b.contains(&a.network())
        }
        _ => false,
    }
}

/// The first `prefix`-sized subnet of `pool` that overlaps none of `taken`.
/// Default routes (prefix 0) in `taken` are ignored: they overlap everything.
pub fn pick_subnet(pool: Ipv4Net, prefix: u8, taken: &[IpNet]) -> Result<Ipv4Net> {
    let subnets = pool.subnets(prefix).map_err(|_| {
        Error::invalid(
            "pool prefix",
            prefix,
            format!("does not fit in the pool {pool}"),
        )
    })?;
    let blocking: Vec<&IpNet> = taken.iter().filter(|t| t.prefix_len() > 0).collect();
    for candidate in subnets {
        let c = IpNet::V4(candidate);
        if !blocking.iter().any(|t| overlaps(&c, t)) {
            return Ok(candidate);
        }
    }
    Err(Error::Exhausted(format!(
        "address pool {pool} exhausted: every /{prefix} in it overlaps a network or a route"
    )))
}

/// IPv4 ranges no network may use: "this network" (0/8), loopback
/// (127/8), link-local (169.254/16, the metadata address among them),
/// multicast (224/4) and reserved/broadcast (240/4).
pub const REFUSED_V4: &[(&str, &str)] = &[
    ("0.0.0.0/8", "\"this network\" (0.0.0.0/8)"),
    ("127.0.0.0/8", "loopback (127.0.0.0/8)"),
    ("169.254.0.0/16", "link-local (169.254.0.0/16)"),
    ("224.0.0.0/4", "multicast (224.0.0.0/4)"),
    (
        "240.0.0.0/4",
        "reserved (240.0.0.0/4, with the broadcast address)",
    ),
];

/// IPv6 ranges no network may use: unspecified and loopback (::/127),
/// IPv4-mapped (::ffff:0:0/96), link-local (fe80::/10) and multicast
/// (ff00::/8).
pub const REFUSED_V6: &[(&str, &str)] = &[
    ("::/127", "unspecified or loopback (::/127)"),
    ("::ffff:0:0/96", "IPv4-mapped (::ffff:0:0/96)"),
    ("fe80::/10", "link-local (fe80::/10)"),
    ("ff00::/8", "multicast (ff00::/8)"),
];

fn refused(net: IpNet, table: &'static [(&'static str, &'static str)]) -> Option<&'static str> {
    table.iter().find_map(|(range, what)| {
        let range: IpNet = range.parse().ok()?;
        overlaps(&net, &range).then_some(*what)
    })
}

/// Parse and check a requested IPv4 subnet: a network address, /8 to /30,
/// outside the refused ranges.
pub fn parse_subnet_v4(text: &str) -> Result<Ipv4Net> {
    let net: Ipv4Net = text
        .trim()
        .parse()
        .map_err(|_| Error::invalid("subnet", text, "not an IPv4 CIDR such as 10.89.3.0/24"))?;
    check_subnet_v4(net).map(|()| net).map_err(|e| match e {
        Error::Invalid { reason, .. } => Error::invalid("subnet", text, reason),
        other => other,
    })
}

/// The rules a subnet must follow, for requests and stored records alike.
pub fn check_subnet_v4(net: Ipv4Net) -> Result<()> {
    if net.trunc() != net {
        return Err(Error::invalid(
            "subnet",
            net,
            format!(
                "not a network address (host bits set; did you mean {}?)",
                net.trunc()
            ),
        ));
    }
    if !(8..=30).contains(&net.prefix_len()) {
        return Err(Error::invalid("subnet", net, "prefix must be /8 to /30"));
    }
    if let Some(what) = refused(IpNet::V4(net), REFUSED_V4) {
        return Err(Error::invalid(
            "subnet",
            net,
            format!("overlaps {what}, which no network may use"),
        ));
    }
    Ok(())
}

/// Parse and check a requested IPv6 subnet: a network address, /48 to /120,
/// outside the refused ranges.
pub fn parse_subnet_v6(text: &str) -> Result<Ipv6Net> {
    let net: Ipv6Net = text.trim().parse().map_err(|_| {
        Error::invalid("ipv6 subnet", text, "not an IPv6 CIDR such as fd00:89::/64")
    })?;
    check_subnet_v6(net).map(|()| net).map_err(|e| match e {
        Error::Invalid { reason, .. } => Error::invalid("ipv6 subnet", text, reason),
        other => other,
    })
}

pub fn check_subnet_v6(net: Ipv6Net) -> Result<()> {
    if net.trunc() != net {
        return Err(Error::invalid(
            "ipv6 subnet",
            net,
            format!("not a network address (did you mean {}?)", net.trunc()),
        ));
    }
    if !(48..=120).contains(&net.prefix_len()) {
        return Err(Error::invalid(
            "ipv6 subnet",
            net,
            "prefix must be /48 to /120",
        ));
    }
    if let Some(what) = refused(IpNet::V6(net), REFUSED_V6) {
        return Err(Error::invalid(
            "ipv6 subnet",
            net,
            format!("overlaps {what}, which no network may use"),
        ));
    }
    Ok(())
}

/// The gateway of a subnet: the one given (checked), or the first host.
pub fn gateway_v4(subnet: Ipv4Net, requested: Option<&str>) -> Result<Ipv4Addr> {
    let Some(text) = requested else {
        return Ok(offset_v4(subnet, 1));
    };
    let gw: Ipv4Addr = text
        .trim()
        .parse()
        .map_err(|_| Error::invalid("gateway", text, "not an IPv4 address"))?;
    if !subnet.contains(&gw) {
        return Err(Error::invalid(
            "gateway",
            text,
            format!("outside the subnet {subnet}"),
        ));
    }
    if gw == subnet.network() || gw == subnet.broadcast() {
        return Err(Error::invalid(
            "gateway",
            text,
            format!("is the network or broadcast address of {subnet}"),
        ));
    }
    Ok(gw)
}

fn offset_v4(subnet: Ipv4Net, offset: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()).wrapping_add(offset))
}

/// Free/used addresses of one subnet.
#[derive(Debug, Clone)]
pub struct AddressPool {
    net: IpNet,
    base: u128,
    size: u128,
    reserved: BTreeSet<u128>,
    used: BTreeSet<u128>,
    cursor: u128,
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

impl AddressPool {
    /// An IPv4 pool: the network, broadcast and gateway addresses are never
    /// handed out.
    pub fn v4(subnet: Ipv4Net, gateway: Ipv4Addr) -> AddressPool {
        let size = 1u128 << (32 - subnet.prefix_len());
        let base = to_u128(IpAddr::V4(subnet.network()));
        // A gateway outside the subnet (a damaged record; records are
        // validated on load) reserves nothing instead of wrapping around.
        let gw = to_u128(IpAddr::V4(gateway))
            .checked_sub(base)
            .filter(|o| *o < size)
            .unwrap_or(0);
        AddressPool {
            net: IpNet::V4(subnet),
            base,
            size,
            reserved: [0, gw, size - 1].into_iter().collect(),
            used: BTreeSet::new(),
            cursor: gw,
        }
    }

    /// An IPv6 pool: the subnet-router anycast address and the gateway are
    /// never handed out.
    pub fn v6(subnet: Ipv6Net, gateway: Ipv6Addr) -> AddressPool {
        let bits = 128 - u32::from(subnet.prefix_len());
        let size = if bits >= 128 {
            u128::MAX
        } else {
            1u128 << bits
        };
        let base = to_u128(IpAddr::V6(subnet.network()));
        let gw = to_u128(IpAddr::V6(gateway))
            .checked_sub(base)
            .filter(|o| *o < size)
            .unwrap_or(0);
        AddressPool {
            net: IpNet::V6(subnet),
            base,
            size,
            reserved: [0, gw].into_iter().collect(),
            used: BTreeSet::new(),
            cursor: gw,
        }
    }

    pub fn subnet(&self) -> IpNet {
        self.net
    }

    fn addr(&self, offset: u128) -> IpAddr {
        let v = self.base + offset;
        match self.net {
            IpNet::V4(_) => IpAddr::V4(Ipv4Addr::from(v as u32)),
            IpNet::V6(_) => IpAddr::V6(Ipv6Addr::from(v)),
        }
    }

    fn offset(&self, ip: IpAddr) -> Option<u128> {
        if !self.net.contains(&ip) {
            return None;
        }
        Some(to_u128(ip) - self.base)
    }

    /// Hand out the next free address.
    pub fn allocate(&mut self) -> Result<IpAddr> {
        let taken = self.used.len() as u128 + self.reserved.len() as u128;
        if taken >= self.size {
            return Err(self.exhausted());
        }
        // Next-fit: at most taken + 1 candidates need looking at.
        let mut candidate = self.cursor;
        for _ in 0..=taken.min(self.size) {
            candidate = (candidate + 1) % self.size;
            if !self.used.contains(&candidate) && !self.reserved.contains(&candidate) {
                self.used.insert(candidate);
                self.cursor = candidate;
                return Ok(self.addr(candidate));
            }
        }
        Err(self.exhausted())
    }

    fn exhausted(&self) -> Error {
        Error::Exhausted(format!("no free address left in {}", self.net))
    }

    /// Take a specific address, refusing one that is outside the subnet,
    /// reserved, or already in use.
    pub fn reserve(&mut self, ip: IpAddr) -> Result<()> {
        let Some(offset) = self.offset(ip) else {
            return Err(Error::invalid(
                "address",
                ip,
                format!("outside the subnet {}", self.net),
            ));
        };
        if self.reserved.contains(&offset) {
            return Err(Error::invalid(
                "address",
                ip,
                format!(
                    "reserved in {} (network, broadcast or gateway address)",
                    self.net
                ),
            ));
        }
        if !self.used.insert(offset) {
            return Err(Error::Conflict(format!(
                "address {ip} is already in use in {}",
                self.net
            )));
        }
        Ok(())
    }

    /// Give an address back; false if it was not in use.
    pub fn release(&mut self, ip: IpAddr) -> bool {
        match self.offset(ip) {
            Some(o) => self.used.remove(&o),
            None => false,
        }
    }

    pub fn is_used(&self, ip: IpAddr) -> bool {
        self.offset(ip).is_some_and(|o| self.used.contains(&o))
    }

    pub fn used(&self) -> usize {
        self.used.len()
    }

    /// How many addresses can be handed out in total.
    pub fn capacity(&self) -> u128 {
        self.size - self.reserved.len() as u128
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn overlap_rules() {
        assert!(overlaps(&net("10.0.0.0/16"), &net("10.0.3.0/24")));
        assert!(overlaps(&net("10.0.3.0/24"), &net("10.0.0.0/16")));
        assert!(!overlaps(&net("10.0.3.0/24"), &net("10.0.4.0/24")));
        assert!(!overlaps(&net("10.0.0.0/8"), &net("fd00::/8")));
    }

    #[test]
    fn picks_first_free_subnet_avoiding_routes_and_networks() {
        let pool: Ipv4Net = "10.89.0.0/16".parse().unwrap();
        assert_eq!(
            pick_subnet(pool, 24, &[]).unwrap().to_string(),
            "10.89.0.0/24"
        );
        let taken = vec![
            net("0.0.0.0/0"), // a default route blocks nothing
            net("10.89.0.0/24"),
            net("10.89.1.128/25"), // a route inside 10.89.1.0/24
            net("10.89.2.7/32"),
        ];
        assert_eq!(
            pick_subnet(pool, 24, &taken).unwrap().to_string(),
            "10.89.3.0/24"
        );
    }

    #[test]
    fn pool_exhaustion_is_an_error() {
        let pool: Ipv4Net = "10.89.0.0/23".parse().unwrap();
        let taken = vec![net("10.89.0.0/24"), net("10.89.1.0/24")];
        let e = pick_subnet(pool, 24, &taken).unwrap_err();
        assert_eq!(e.code(), "exhausted");
        assert!(e.to_string().contains("10.89.0.0/23"));
        // A route covering the whole pool exhausts it too.
        assert!(pick_subnet(pool, 24, &[net("10.0.0.0/8")]).is_err());
    }

    #[test]
    fn subnet_parsing_names_the_value() {
        assert_eq!(
            parse_subnet_v4("10.1.2.0/24").unwrap().to_string(),
            "10.1.2.0/24"
        );
        let e = parse_subnet_v4("10.1.2.3/24").unwrap_err();
        assert!(e.to_string().contains("10.1.2.3/24") && e.to_string().contains("10.1.2.0/24"));
        assert!(parse_subnet_v4("banana")
            .unwrap_err()
            .to_string()
            .contains("banana"));
        assert!(parse_subnet_v4("10.0.0.0/31").is_err());
        assert!(parse_subnet_v4("fd00::/64").is_err());
        assert!(parse_subnet_v6("fd00:1::/64").is_ok());
        assert!(parse_subnet_v6("fd00:1::1/64").is_err());
    }

    #[test]
    fn gateways() {
        let s: Ipv4Net = "10.1.2.0/24".parse().unwrap();
        assert_eq!(gateway_v4(s, None).unwrap().to_string(), "10.1.2.1");
        assert_eq!(
            gateway_v4(s, Some("10.1.2.254")).unwrap().to_string(),
            "10.1.2.254"
        );
        let e = gateway_v4(s, Some("10.1.3.1")).unwrap_err();
        assert!(e.to_string().contains("10.1.3.1") && e.to_string().contains("outside"));
        assert!(gateway_v4(s, Some("10.1.2.255")).is_err());
        assert!(gateway_v4(s, Some("10.1.2.0")).is_err());
        assert!(gateway_v4(s, Some("nope")).is_err());
    }

    #[test]
    fn allocation_never_repeats_and_skips_reserved() {
        let s: Ipv4Net = "10.1.2.0/24".parse().unwrap();
        let mut p = AddressPool::v4(s, "10.1.2.1".parse().unwrap());
        assert_eq!(p.capacity(), 253);
        let mut seen = HashSet::new();
        for _ in 0..253 {
            let ip = p.allocate().unwrap();
            assert!(seen.insert(ip), "{ip} handed out twice");
            let last = ip.to_string();
            assert!(last != "10.1.2.0" && last != "10.1.2.1" && last != "10.1.2.255");
        }
        assert_eq!(p.allocate().unwrap_err().code(), "exhausted");
        // Freed addresses come back, and only those.
        assert!(p.release("10.1.2.77".parse().unwrap()));
        assert!(!p.release("10.1.2.77".parse().unwrap()));
        assert_eq!(p.allocate().unwrap().to_string(), "10.1.2.77");
    }

    #[test]
    fn next_fit_does_not_reuse_at_once() {
        let s: Ipv4Net = "10.1.2.0/24".parse().unwrap();
        let mut p = AddressPool::v4(s, "10.1.2.1".parse().unwrap());
        let a = p.allocate().unwrap();
        assert_eq!(a.to_string(), "10.1.2.2");
        p.release(a);
        assert_eq!(p.allocate().unwrap().to_string(), "10.1.2.3");
    }

    #[test]
    fn reservations() {
        let s: Ipv4Net = "10.1.2.0/24".parse().unwrap();
        let mut p = AddressPool::v4(s, "10.1.2.1".parse().unwrap());
        p.reserve("10.1.2.9".parse().unwrap()).unwrap();
        assert_eq!(
            p.reserve("10.1.2.9".parse().unwrap()).unwrap_err().code(),
            "conflict"
        );
        let e = p.reserve("10.1.3.9".parse().unwrap()).unwrap_err();
        assert!(e.to_string().contains("outside"), "{e}");
        assert!(p.reserve("10.1.2.1".parse().unwrap()).is_err());
        assert!(p.reserve("10.1.2.255".parse().unwrap()).is_err());
        assert!(p.is_used("10.1.2.9".parse().unwrap()));
        // Allocation skips the reserved one.
        for _ in 0..20 {
            assert_ne!(p.allocate().unwrap().to_string(), "10.1.2.9");
        }
    }

    #[test]
    fn every_refused_range_is_refused_and_its_neighbours_are_not() {
        // Inside each refused range (a piece of it, and the whole), named.
        for (range, what) in REFUSED_V4 {
            let net: Ipv4Net = range.parse().unwrap();
            let piece = net
                .subnets(24.max(net.prefix_len()))
                .unwrap()
                .last()
                .unwrap();
            let whole = (net.prefix_len() >= 8).then(|| net.to_string());
            for text in std::iter::once(piece.to_string()).chain(whole) {
                let e = parse_subnet_v4(&text).unwrap_err();
                assert!(e.to_string().contains(what), "{text}: {e}");
            }
        }
        for (range, what) in REFUSED_V6 {
            let net: Ipv6Net = range.parse().unwrap();
            let piece = Ipv6Net::new(net.network(), 120).unwrap();
            let e = parse_subnet_v6(&piece.to_string()).unwrap_err();
            assert!(e.to_string().contains(what), "{piece}: {e}");
        }
        // Overlapping from outside: a /8 around link-local, a /64 around ::1.
        assert!(parse_subnet_v4("169.0.0.0/8").is_err());
        assert!(parse_subnet_v6("::/64").is_err());
        // The neighbours are fine.
        for ok in [
            "1.0.0.0/24",
            "126.255.255.0/24",
            "128.0.0.0/24",
            "169.253.0.0/16",
            "169.255.0.0/16",
            "223.255.255.0/24",
        ] {
            parse_subnet_v4(ok).unwrap();
        }
        for ok in ["fd00:89::/64", "2001:db8::/64", "fe00::/64", "fec0::/64"] {
            parse_subnet_v6(ok).unwrap();
        }
    }

    #[test]
    fn small_subnets_and_v6() {
        let s: Ipv4Net = "10.1.2.0/30".parse().unwrap();
        let mut p = AddressPool::v4(s, "10.1.2.1".parse().unwrap());
        assert_eq!(p.allocate().unwrap().to_string(), "10.1.2.2");
        assert!(p.allocate().is_err());

        let s6: Ipv6Net = "fd00:89::/64".parse().unwrap();
        let mut p6 = AddressPool::v6(s6, "fd00:89::1".parse().unwrap());
        assert_eq!(p6.allocate().unwrap().to_string(), "fd00:89::2");
        assert_eq!(p6.allocate().unwrap().to_string(), "fd00:89::3");
        p6.reserve("fd00:89::4".parse().unwrap()).unwrap();
        assert_eq!(p6.allocate().unwrap().to_string(), "fd00:89::5");
    }
}
