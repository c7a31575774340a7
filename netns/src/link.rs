//! Links: bridges, veth pairs, and the link settings gVisor accepts.
//!
//! Every change to an existing link is an RTM_NEWLINK without NLM_F_CREATE,
//! as iproute2's `ip link set` sends it: gVisor rejects RTM_SETLINK, and
//! accepts only IFF_UP in ifi_flags/ifi_change and only IFLA_IFNAME,
//! IFLA_MASTER, IFLA_LINKINFO, IFLA_ADDRESS, IFLA_MTU, IFLA_NET_NS_FD and
//! IFLA_TXQLEN as attributes.

use std::os::fd::AsRawFd;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoData, InfoVeth, LinkAttribute, LinkFlags,
    LinkInfo, LinkMessage,
};
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::{LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth};

use crate::error::{Error, Result};
use crate::handle::{Batch, Handle, Op};
use crate::ifname::validate_ifname;
use crate::namespace::Netns;

/// What the kernel reports about a link.
/// MTUs the kernel accepts on an Ethernet-like link (IPv4's minimum of 68
/// up to the largest 16-bit value).
pub const MTU_RANGE: std::ops::RangeInclusive<u32> = 68..=65535;

/// Check an MTU before anything is sent, naming the value.
pub fn validate_mtu(mtu: u32) -> Result<()> {
    if MTU_RANGE.contains(&mtu) {
        return Ok(());
    }
    Err(Error::invalid(
        "MTU",
        mtu.to_string(),
        format!("must be {}..={}", MTU_RANGE.start(), MTU_RANGE.end()),
    ))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// "bridge", "veth", ...; None when the kernel does not say (gVisor
    /// omits IFLA_LINKINFO in dumps).
    pub kind: Option<String>,
    pub mtu: Option<u32>,
    pub mac: Option<Vec<u8>>,
    pub up: bool,
    /// Index of the bridge this link is attached to.
    pub master: Option<u32>,
    /// For a veth: the peer's index (in the peer's namespace).
    pub peer_index: Option<u32>,
    /// For a veth whose peer is in another namespace: that namespace's id
    /// as seen from this one (IFLA_LINK_NETNSID). Linux reports it only
    /// while the peer's namespace is alive; gVisor never does.
    pub peer_netnsid: Option<i32>,
}

impl Link {
    pub(crate) fn from_message(msg: &LinkMessage) -> Link {
        let mut link = Link {
            index: msg.header.index,
            name: String::new(),
            kind: None,
            mtu: None,
            mac: None,
            up: msg.header.flags.contains(LinkFlags::Up),
            master: None,
            peer_index: None,
            peer_netnsid: None,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => link.name = n.clone(),
                LinkAttribute::Mtu(m) => link.mtu = Some(*m),
                LinkAttribute::Address(a) => link.mac = Some(a.clone()),
                LinkAttribute::Controller(m) if *m != 0 => link.master = Some(*m),
                LinkAttribute::Link(p) if *p != msg.header.index && *p != 0 => {
                    link.peer_index = Some(*p)
                }
                LinkAttribute::LinkNetNsId(id) if *id >= 0 => link.peer_netnsid = Some(*id),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        if let LinkInfo::Kind(kind) = info {
                            link.kind = Some(kind.to_string());
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }
}

/// A veth pair whose peer is created directly inside another namespace, by
/// namespace fd: moving a link afterwards costs an RCU grace period (~16 ms)
/// and gVisor ignores a move by pid.
#[derive(Debug)]
pub struct VethSpec<'a> {
    /// Name of the end that stays in the handle's namespace.
    pub name: &'a str,
    /// Name of the end created in `peer_ns`.
    pub peer_name: &'a str,
    pub peer_ns: &'a Netns,
    /// Attach the host end to this bridge on creation.
    pub master: Option<u32>,
    pub mtu: Option<u32>,
    /// MAC address of the peer. The local end then gets `paired_mac` of
    /// it, so either end names the other where the kernel reports no
    /// IFLA_LINK (gVisor).
    pub peer_mac: Option<[u8; 6]>,
    /// Bring the host end up on creation.
    pub up: bool,
}

fn describe_index(index: u32) -> String {
    format!("link #{index}")
}

fn modify(index: u32) -> LinkMessageBuilder<LinkUnspec> {
    LinkUnspec::new_with_index(index)
}

fn modify_op(msg: LinkMessage, op: &'static str, index: u32) -> Op {
    Op::ack(
        RouteNetlinkMessage::NewLink(msg),
        0,
        op,
        describe_index(index),
    )
}

pub(crate) fn set_up_op(index: u32, up: bool) -> Op {
    let builder = modify(index);
    let msg = if up { builder.up() } else { builder.down() }.build();
    modify_op(msg, if up { "set up" } else { "set down" }, index)
}

/// `ip link set addrgenmode none`: no IPv6 link-local address when the link
/// next goes up. The kernel takes IFLA_AF_SPEC only on an existing link.
pub(crate) fn no_ipv6_link_local_op(index: u32) -> Op {
    let msg = modify(index)
        .append_extra_attribute(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
            vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)],
        )]))
        .build();
    modify_op(msg, "turn off IPv6 link-local address of", index)
}

pub(crate) fn get_by_index_op(index: u32) -> Op {
    let msg = LinkUnspec::new_with_index(index).build();
    Op::ack(
        RouteNetlinkMessage::GetLink(msg),
        0,
        "get",
        describe_index(index),
    )
}

fn get_by_name_op(name: &str) -> Op {
    let msg = LinkUnspec::new_with_name(name).build();
    Op::ack(
        RouteNetlinkMessage::GetLink(msg),
        0,
        "get link",
        format!("{name:?}"),
    )
}

pub(crate) fn single_link(replies: Vec<RouteNetlinkMessage>, what: &str) -> Result<Link> {
    replies
        .iter()
        .find_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => Some(Link::from_message(l)),
            _ => None,
        })
        .ok_or_else(|| Error::protocol("get link", what.to_string(), "no link in the reply"))
}

impl Handle {
    /// Create a bridge, or return the existing one of that name (refusing a
    /// non-bridge link that has the name). The bridge is up afterwards.
    pub async fn ensure_bridge(&self, name: &str, mtu: Option<u32>) -> Result<Link> {
        self.ensure_bridge_with_mac(name, mtu, None).await
    }

    /// `ensure_bridge`, giving a bridge it creates this MAC address. A
    /// bridge with an address of its own keeps it (Linux otherwise gives it
    /// the lowest MAC of its ports, which changes as ports come and go); an
    /// existing bridge keeps the address it has.
    pub async fn ensure_bridge_with_mac(
        &self,
        name: &str,
        mtu: Option<u32>,
        mac: Option<[u8; 6]>,
    ) -> Result<Link> {
        validate_ifname(name)?;
        let mut builder = LinkBridge::new(name);
        if let Some(mtu) = mtu {
            builder = builder.mtu(mtu);
        }
        if let Some(mac) = mac {
            validate_mac(mac)?;
            builder = builder.address(mac.to_vec());
        }
        let create = Op::ack(
            RouteNetlinkMessage::NewLink(builder.build()),
            NLM_F_CREATE | NLM_F_EXCL,
            "create bridge",
            format!("{name:?}"),
        );
        let (created, get) = self.run_pair(create, get_by_name_op(name)).await?;
        match created {
            Ok(_) => single_link(get?, name),
            Err(e) if e.is_already_exists() => {
                let link = single_link(get?, name)?;
                if let Some(kind) = &link.kind {
                    if kind != "bridge" {
                        return Err(Error::invalid(
                            "bridge name",
                            name,
                            format!("a {kind} link already has this name"),
                        ));
                    }
                }
                if !link.up {
                    self.set_up(link.index, true).await?;
                }
                Ok(link)
            }
            Err(e) => Err(e),
        }
    }

    /// Create a veth pair with the peer placed in `spec.peer_ns` by fd, and
    /// return the local end. Nothing is left behind on failure: both ends are
    /// made by one request.
    pub async fn create_veth(&self, spec: &VethSpec<'_>) -> Result<Link> {
        let op = veth_op(spec)?;
        let (created, get) = self.run_pair(op, get_by_name_op(spec.name)).await?;
        created?;
        single_link(get?, spec.name)
    }

    pub async fn set_up(&self, index: u32, up: bool) -> Result<()> {
        self.run(set_up_op(index, up)).await.map(drop)
    }

    /// Attach a link to a bridge, or detach it with `None`.
    pub async fn set_master(&self, index: u32, master: Option<u32>) -> Result<()> {
        let msg = match master {
            Some(m) => modify(index).controller(m).build(),
            None => modify(index).nocontroller().build(),
        };
        self.run(modify_op(msg, "set master of", index))
            .await
            .map(drop)
    }

    pub async fn rename(&self, index: u32, name: &str) -> Result<()> {
        validate_ifname(name)?;
        let msg = modify(index).name(name.to_string()).build();
        self.run(modify_op(msg, "rename", index)).await.map(drop)
    }

    pub async fn set_mtu(&self, index: u32, mtu: u32) -> Result<()> {
        validate_mtu(mtu)?;
        let msg = modify(index).mtu(mtu).build();
        self.run(modify_op(msg, "set MTU of", index))
            .await
            .map(drop)
    }

    pub async fn set_mac(&self, index: u32, mac: [u8; 6]) -> Result<()> {
        validate_mac(mac)?;
        let msg = modify(index).address(mac.to_vec()).build();
        self.run(modify_op(msg, "set MAC of", index))
            .await
            .map(drop)
    }

    /// Delete a link (for a veth, both ends go).
    pub async fn delete_link(&self, index: u32) -> Result<()> {
        let msg = LinkUnspec::new_with_index(index).build();
        self.run(Op::ack(
            RouteNetlinkMessage::DelLink(msg),
            0,
            "delete",
            describe_index(index),
        ))
        .await
        .map(drop)
    }

    pub async fn link_by_name(&self, name: &str) -> Result<Link> {
        validate_ifname(name)?;
        match self.run(get_by_name_op(name)).await {
            Ok(replies) => single_link(replies, name),
            // A stack that cannot look a link up by name: search a dump.
            Err(e)
                if matches!(
                    e.errno(),
                    Some(nix::errno::Errno::EINVAL | nix::errno::Errno::EOPNOTSUPP)
                ) =>
            {
                self.links()
                    .await?
                    .into_iter()
                    .find(|l| l.name == name)
                    .ok_or_else(|| {
                        Error::os("get link", format!("{name:?}"), nix::errno::Errno::ENODEV)
                    })
            }
            Err(e) => Err(e),
        }
    }

    pub async fn link_by_index(&self, index: u32) -> Result<Link> {
        let replies = self.run(get_by_index_op(index)).await?;
        single_link(replies, &describe_index(index))
    }

    pub async fn links(&self) -> Result<Vec<Link>> {
        let replies = self
            .run(Op::dump(
                RouteNetlinkMessage::GetLink(LinkMessage::default()),
                "list links in",
                self.namespace().to_string(),
            ))
            .await?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(Link::from_message(l)),
                _ => None,
            })
            .collect())
    }
}

impl Batch<'_> {
    pub fn set_up(self, index: u32, up: bool) -> Self {
        self.push(set_up_op(index, up))
    }
}

fn validate_mac(mac: [u8; 6]) -> Result<()> {
    if mac[0] & 1 == 1 || mac == [0; 6] {
        return Err(Error::invalid(
            "MAC address",
            format_mac(&mac),
            "must be a non-zero unicast address",
        ));
    }
    Ok(())
}

/// The MAC of the other end of a veth pair whose one end has `mac`: the
/// same address with bit 2 of the first byte flipped (an involution that
/// keeps it locally administered and unicast). `create_veth` gives the
/// local end the paired MAC of the peer's, so a pair can be matched from
/// its two ends' addresses alone where the kernel does not report a veth's
/// peer (gVisor reports neither IFLA_LINK nor IFLA_LINK_NETNSID).
pub fn paired_mac(mac: [u8; 6]) -> [u8; 6] {
    let mut paired = mac;
    paired[0] ^= 0x04;
    paired
}

pub fn format_mac(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub(crate) fn veth_op(spec: &VethSpec<'_>) -> Result<Op> {
    validate_ifname(spec.name)?;
    validate_ifname(spec.peer_name)?;
    let mut peer = LinkUnspec::new_with_name(spec.peer_name).setns_by_fd(spec.peer_ns.as_raw_fd());
    if let Some(mtu) = spec.mtu {
        peer = peer.mtu(mtu);
    }
    if let Some(mac) = spec.peer_mac {
        validate_mac(mac)?;
        peer = peer.address(mac.to_vec());
    }
    let mut builder = LinkVeth::new(spec.name, spec.peer_name)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())));
    if let Some(mac) = spec.peer_mac {
        builder = builder.address(paired_mac(mac).to_vec());
    }
    if let Some(master) = spec.master {
        builder = builder.controller(master);
    }
    if let Some(mtu) = spec.mtu {
        builder = builder.mtu(mtu);
    }
    if spec.up {
        builder = builder.up();
    }
    Ok(Op::ack(
        RouteNetlinkMessage::NewLink(builder.build()),
        NLM_F_CREATE | NLM_F_EXCL,
        "create veth",
        format!(
            "{:?} (peer {:?} in {})",
            spec.name,
            spec.peer_name,
            spec.peer_ns.describe()
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_changes_carry_only_up_in_flags() {
        let op = set_up_op(7, true);
        let RouteNetlinkMessage::NewLink(msg) = op.request.message else {
            panic!("set up must be an RTM_NEWLINK");
        };
        assert_eq!(msg.header.index, 7);
        assert_eq!(msg.header.change_mask, LinkFlags::Up);
        assert_eq!(msg.header.flags, LinkFlags::Up);
        assert!(msg.attributes.is_empty());
    }

    #[test]
    fn paired_macs_pair_both_ways_and_stay_local_unicast() {
        let inner = [0x0a, 0x58, 10, 89, 0, 2];
        let host = paired_mac(inner);
        assert_eq!(host, [0x0e, 0x58, 10, 89, 0, 2]);
        assert_ne!(host, inner);
        assert_eq!(paired_mac(host), inner);
        validate_mac(host).unwrap();
        assert_eq!(host[0] & 0x03, 0x02, "locally administered unicast");
    }

    #[test]
    fn bad_mac_is_named() {
        let err = validate_mac([1, 0, 0, 0, 0, 1]).unwrap_err();
        assert!(err.to_string().contains("01:00:00:00:00:01"), "{err}");
    }
}
