//! Event synthesis: turn successive RTM_GETLINK / RTM_GETADDR dumps into the
//! RTM_NEW*/RTM_DEL* notifications the kernel would have multicast.
//!
//! Pure: tables are built from dumped messages and diffed; no I/O.

use crate::netlink::{self, attrs, messages, NlHdr};
use std::collections::BTreeMap;

/// Link attributes that change without a state change worth notifying
/// (counters, timers inside IFLA_LINKINFO, per-family statistics).
const VOLATILE_LINK_ATTRS: &[u16] = &[
    7,  // IFLA_STATS
    14, // IFLA_MAP
    18, // IFLA_LINKINFO (bridge timers)
    23, // IFLA_STATS64
    26, // IFLA_AF_SPEC (inet6 statistics, timestamps)
    35, // IFLA_CARRIER_CHANGES
    43, // IFLA_XDP
    47, // IFLA_CARRIER_UP_COUNT
    48, // IFLA_CARRIER_DOWN_COUNT
];

/// Address attributes that change on their own.
const VOLATILE_ADDR_ATTRS: &[u16] = &[6 /* IFA_CACHEINFO */];

/// What kind of object a table holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Link,
    Addr,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    fingerprint: Vec<u8>,
    msg: Vec<u8>,
}

/// The state of one kind of object at one point in time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    entries: BTreeMap<Vec<u8>, Entry>,
}

/// A synthesized notification and the multicast group mask it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub msg: Vec<u8>,
    pub group: u64,
}

fn fingerprint(fixed: &[u8], rest: &[u8], volatile: &[u16]) -> Vec<u8> {
    let mut fp = fixed.to_vec();
    for a in attrs(rest) {
        if !volatile.contains(&a.ty) {
            fp.extend_from_slice(a.raw);
        }
    }
    fp
}

impl Table {
    /// Build from the messages of a dump (any datagrams concatenated message
    /// by message). Messages of other types or malformed ones are ignored.
    pub fn from_messages<'a, I: IntoIterator<Item = &'a [u8]>>(kind: Kind, msgs: I) -> Table {
        let mut t = Table::default();
        for raw in msgs {
            for m in messages(raw) {
                t.insert(kind, m.hdr, m.raw);
            }
        }
        t
    }

    fn insert(&mut self, kind: Kind, hdr: NlHdr, raw: &[u8]) {
        let payload = &raw[netlink::NLMSG_HDRLEN..];
        match (kind, hdr.ty) {
            (Kind::Link, netlink::RTM_NEWLINK) => {
                if payload.len() < netlink::IFINFOMSG_LEN {
                    return;
                }
                // key: ifindex; fingerprint: family/type/index/flags + stable attrs
                let key = payload[4..8].to_vec();
                let fp = fingerprint(
                    &payload[..12],
                    &payload[netlink::IFINFOMSG_LEN..],
                    VOLATILE_LINK_ATTRS,
                );
                self.entries.insert(
                    key,
                    Entry {
                        fingerprint: fp,
                        msg: raw.to_vec(),
                    },
                );
            }
            (Kind::Addr, netlink::RTM_NEWADDR) => {
                if payload.len() < netlink::IFADDRMSG_LEN {
                    return;
                }
                // key: family, prefixlen, index, IFA_ADDRESS, IFA_LOCAL
                let mut key = vec![payload[0], payload[1]];
                key.extend_from_slice(&payload[4..8]);
                let rest = &payload[netlink::IFADDRMSG_LEN..];
                for a in attrs(rest) {
                    if a.ty == 1 || a.ty == 2 {
                        key.extend_from_slice(a.raw);
                    }
                }
                let fp = fingerprint(&payload[..8], rest, VOLATILE_ADDR_ATTRS);
                self.entries.insert(
                    key,
                    Entry {
                        fingerprint: fp,
                        msg: raw.to_vec(),
                    },
                );
            }
            _ => {}
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Notifications that turn `self` (old) into `new`, additions and
    /// changes first, then removals, each in key order.
    pub fn diff(&self, new: &Table, kind: Kind) -> Vec<Event> {
        let (new_ty, del_ty) = match kind {
            Kind::Link => (netlink::RTM_NEWLINK, netlink::RTM_DELLINK),
            Kind::Addr => (netlink::RTM_NEWADDR, netlink::RTM_DELADDR),
        };
        let mut out = Vec::new();
        for (k, e) in &new.entries {
            let changed = match self.entries.get(k) {
                Some(old) => old.fingerprint != e.fingerprint,
                None => true,
            };
            if changed {
                if let Some(m) = netlink::make_event(&e.msg, new_ty) {
                    out.push(Event {
                        group: group_of(kind, &m),
                        msg: m,
                    });
                }
            }
        }
        for (k, e) in &self.entries {
            if !new.entries.contains_key(k) {
                if let Some(m) = netlink::make_event(&e.msg, del_ty) {
                    out.push(Event {
                        group: group_of(kind, &m),
                        msg: m,
                    });
                }
            }
        }
        out
    }
}

/// Order one poll's events as the kernel would have sent them: new/changed
/// links, then address removals, address additions, and link removals last
/// (a deleted link's addresses go before the link itself).
pub fn merge(links: Vec<Event>, addrs: Vec<Event>) -> Vec<Event> {
    let is = |e: &Event, ty: u16| NlHdr::parse(&e.msg).map(|h| h.ty == ty).unwrap_or(false);
    let (link_del, link_new): (Vec<_>, Vec<_>) =
        links.into_iter().partition(|e| is(e, netlink::RTM_DELLINK));
    let (addr_del, addr_new): (Vec<_>, Vec<_>) =
        addrs.into_iter().partition(|e| is(e, netlink::RTM_DELADDR));
    let mut out = link_new;
    out.extend(addr_del);
    out.extend(addr_new);
    out.extend(link_del);
    out
}

fn group_of(kind: Kind, msg: &[u8]) -> u64 {
    match kind {
        Kind::Link => netlink::GRP_LINK,
        Kind::Addr => match msg.get(netlink::NLMSG_HDRLEN) {
            Some(&netlink::AF_INET) => netlink::GRP_IPV4_IFADDR,
            Some(&netlink::AF_INET6) => netlink::GRP_IPV6_IFADDR,
            _ => 0,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::{NlHdr, RTM_DELLINK, RTM_NEWLINK};

    fn link(index: i32, flags: u32, name: &str, stats: u8) -> Vec<u8> {
        let mut v = vec![0u8; 32];
        v[20..24].copy_from_slice(&index.to_ne_bytes());
        v[24..28].copy_from_slice(&flags.to_ne_bytes());
        let mut n = name.as_bytes().to_vec();
        n.push(0);
        let push = |v: &mut Vec<u8>, ty: u16, d: &[u8]| {
            v.extend_from_slice(&((4 + d.len()) as u16).to_ne_bytes());
            v.extend_from_slice(&ty.to_ne_bytes());
            v.extend_from_slice(d);
            while v.len() & 3 != 0 {
                v.push(0);
            }
        };
        push(&mut v, 3, &n);
        push(&mut v, 7, &[stats; 8]);
        let h = NlHdr {
            len: v.len() as u32,
            ty: RTM_NEWLINK,
            flags: 2,
            seq: 1,
            pid: 5,
        };
        v[..16].copy_from_slice(&h.to_bytes());
        v
    }

    fn addr(index: i32, family: u8, a: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; 24];
        v[16] = family;
        v[17] = 24;
        v[20..24].copy_from_slice(&index.to_ne_bytes());
        v.extend_from_slice(&((4 + a.len()) as u16).to_ne_bytes());
        v.extend_from_slice(&1u16.to_ne_bytes());
        v.extend_from_slice(a);
        let h = NlHdr {
            len: v.len() as u32,
            ty: netlink::RTM_NEWADDR,
            flags: 2,
            seq: 1,
            pid: 5,
        };
        v[..16].copy_from_slice(&h.to_bytes());
        v
    }

    fn table(kind: Kind, msgs: &[Vec<u8>]) -> Table {
        Table::from_messages(kind, msgs.iter().map(|m| m.as_slice()))
    }

    #[test]
    fn no_change_no_event_even_if_counters_move() {
        let a = table(Kind::Link, &[link(1, 1, "lo", 1)]);
        let b = table(Kind::Link, &[link(1, 1, "lo", 2)]);
        assert!(a.diff(&b, Kind::Link).is_empty());
    }

    #[test]
    fn up_new_and_deleted() {
        let a = table(
            Kind::Link,
            &[
                link(1, 1, "lo", 0),
                link(2, 0, "v0", 0),
                link(3, 0, "gone", 0),
            ],
        );
        let b = table(
            Kind::Link,
            &[
                link(1, 1, "lo", 0),
                link(2, 1, "v0", 0),
                link(4, 0, "new", 0),
            ],
        );
        let ev = a.diff(&b, Kind::Link);
        assert_eq!(ev.len(), 3);
        let hs: Vec<_> = ev.iter().map(|e| NlHdr::parse(&e.msg).unwrap()).collect();
        assert_eq!(hs[0].ty, RTM_NEWLINK);
        assert_eq!(netlink::ifinfo_index(&ev[0].msg[16..]), Some(2));
        assert_eq!(hs[1].ty, RTM_NEWLINK);
        assert_eq!(netlink::ifinfo_index(&ev[1].msg[16..]), Some(4));
        assert_eq!(hs[2].ty, RTM_DELLINK);
        assert_eq!(netlink::ifinfo_index(&ev[2].msg[16..]), Some(3));
        for h in hs {
            assert_eq!((h.seq, h.pid, h.flags), (0, 0, 0));
        }
        assert!(ev.iter().all(|e| e.group == netlink::GRP_LINK));
    }

    #[test]
    fn addresses_by_family() {
        let a = table(Kind::Addr, &[addr(1, 2, &[127, 0, 0, 1])]);
        let b = table(
            Kind::Addr,
            &[
                addr(1, 2, &[127, 0, 0, 1]),
                addr(2, 2, &[10, 0, 0, 1]),
                addr(2, 10, &[0xfe; 16]),
            ],
        );
        let ev = a.diff(&b, Kind::Addr);
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].group, netlink::GRP_IPV4_IFADDR);
        assert_eq!(ev[1].group, netlink::GRP_IPV6_IFADDR);
        let back = b.diff(&a, Kind::Addr);
        assert!(back
            .iter()
            .all(|e| NlHdr::parse(&e.msg).unwrap().ty == netlink::RTM_DELADDR));
    }

    #[test]
    fn merged_order_matches_the_kernel() {
        let l0 = table(Kind::Link, &[link(1, 1, "lo", 0), link(3, 1, "br", 0)]);
        let l1 = table(Kind::Link, &[link(1, 1, "lo", 0), link(4, 1, "new", 0)]);
        let a0 = table(Kind::Addr, &[addr(3, 2, &[10, 0, 0, 1])]);
        let a1 = table(Kind::Addr, &[addr(4, 2, &[10, 0, 0, 2])]);
        let ev = merge(l0.diff(&l1, Kind::Link), a0.diff(&a1, Kind::Addr));
        let tys: Vec<u16> = ev
            .iter()
            .map(|e| NlHdr::parse(&e.msg).unwrap().ty)
            .collect();
        assert_eq!(
            tys,
            vec![
                RTM_NEWLINK,
                netlink::RTM_DELADDR,
                netlink::RTM_NEWADDR,
                RTM_DELLINK
            ]
        );
    }

    #[test]
    fn garbage_is_ignored() {
        let t = Table::from_messages(Kind::Link, [&[1u8, 2, 3][..], &[0xff; 40][..]]);
        assert!(t.is_empty());
        let mut m = link(1, 1, "lo", 0);
        m.truncate(24);
        m[0] = 24;
        assert!(table(Kind::Link, &[m]).is_empty());
    }
}
