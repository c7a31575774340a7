//! The agent's data: what is stored (networks, endpoints, targets), the
//! CNI-style result of an endpoint, and the name rules. No I/O.

mod cni;
mod names;
mod stored;

pub use cni::{CniDns, CniInterface, CniIp, CniResult, CniRoute};
pub use names::{
    bridge_mac, bridge_name, validate_ifname, validate_mtu, validate_netns_name,
    validate_network_name, BRIDGE_PREFIX, MAX_IFNAME, MAX_NETWORK_NAME,
};
pub use stored::{format_mac, mac_for, now_secs, Endpoint, EndpointState, Network, NsId, Target};
