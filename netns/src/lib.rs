//! The only code in conductor-net that speaks rtnetlink or enters network
//! namespaces: typed, async, idempotent-friendly primitives that use only the
//! netlink subset gVisor accepts.

mod address;
mod connection;
mod endpoint;
mod error;
mod handle;
mod ifname;
mod link;
mod namespace;
mod route;
mod scratch;
mod subscription;
pub mod sys;
mod sysctl;

pub use address::Address;
pub use endpoint::{create_endpoint, delete_endpoint, Endpoint, EndpointSpec};
pub use error::{Error, ErrorKind, Result};
pub use handle::{Batch, Handle};
pub use ifname::{validate_ifname, MAX_IFNAME_LEN};
pub use ipnet::IpNet;
pub use link::{format_mac, paired_mac, validate_mtu, Link, VethSpec, MTU_RANGE};
pub use namespace::{validate_netns_name, Netns, NETNS_RUN_DIR};
pub use route::Route;
pub use scratch::ScratchNamespaces;
pub use subscription::{probe_subscription, SubscriptionProbe};
pub use sysctl::{read_sysctl, write_sysctl};
