//! Can a process subscribe to rtnetlink multicast groups (what `ip
//! monitor`, Docker's netlink library and systemd-networkd need)? gVisor
//! refuses it; the preload fills that hole.

use netns::Netns;

use super::{CheckId, Checks, Outcome};

pub(super) fn probe(c: &mut Checks, ns: &Netns) {
    let probe = match ns.run(netns::probe_subscription) {
        Ok(p) => p,
        Err(e) => {
            c.add(CheckId::NetlinkSubscription, Outcome::Fail, e.to_string());
            return;
        }
    };
    if probe.works() {
        c.add(
            CheckId::NetlinkSubscription,
            Outcome::Ok,
            "bind with nl_groups and NETLINK_ADD_MEMBERSHIP accepted",
        );
        return;
    }
    let show = |r: &netns::Result<()>| match r {
        Ok(()) => "ok".to_string(),
        Err(e) => e.to_string(),
    };
    c.add(
        CheckId::NetlinkSubscription,
        Outcome::Fail,
        format!(
            "bind with groups: {}; NETLINK_ADD_MEMBERSHIP: {} (run dockerd with the preload)",
            show(&probe.bind_with_groups),
            show(&probe.add_membership)
        ),
    );
}
