//! Can a process in this namespace subscribe to rtnetlink multicast groups
//! (what `ip monitor`, Docker's netlink library and systemd-networkd need)?
//! gVisor 20240729 refuses both ways of subscribing; releases from 2025-11
//! accept the link group only.

use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::error::{errno_of, Error, Result};

/// RTMGRP_LINK: the link group as a bind() bitmask.
const RTMGRP_LINK: u32 = 1;
/// RTNLGRP_LINK: the link group as a membership number.
const RTNLGRP_LINK: u32 = 1;

/// What each way of subscribing to the link group answered.
#[derive(Debug)]
pub struct SubscriptionProbe {
    /// bind() with nl_groups = RTMGRP_LINK.
    pub bind_with_groups: Result<()>,
    /// setsockopt(NETLINK_ADD_MEMBERSHIP, RTNLGRP_LINK) on a bound socket.
    pub add_membership: Result<()>,
}

impl SubscriptionProbe {
    /// Both ways work.
    pub fn works(&self) -> bool {
        self.bind_with_groups.is_ok() && self.add_membership.is_ok()
    }
}

/// Try both ways of subscribing to the link group, each on a fresh socket in
/// the calling thread's namespace (use `Netns::run` for another one).
pub fn probe_subscription() -> SubscriptionProbe {
    let os = |op: &'static str| {
        move |e: std::io::Error| Error::os(op, "netlink route socket", errno_of(&e))
    };
    let bind_with_groups = Socket::new(NETLINK_ROUTE)
        .map_err(os("open"))
        .and_then(|mut s| {
            s.bind(&SocketAddr::new(0, RTMGRP_LINK))
                .map_err(os("bind with groups"))
        });
    let add_membership = Socket::new(NETLINK_ROUTE)
        .map_err(os("open"))
        .and_then(|mut s| {
            s.bind_auto().map_err(os("bind"))?;
            s.add_membership(RTNLGRP_LINK)
                .map_err(os("add membership to the link group"))
        });
    SubscriptionProbe {
        bind_with_groups,
        add_membership,
    }
}
