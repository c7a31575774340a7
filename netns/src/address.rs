//! IPv4 and IPv6 addresses. Only IFA_LOCAL / IFA_ADDRESS are sent: gVisor
//! rejects IFA_FLAGS, IFA_LABEL and IFA_CACHEINFO.

use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::error::Result;
use crate::handle::{Batch, Handle, Op};

/// An address assigned to a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub index: u32,
    pub address: IpNet,
}

fn message(index: u32, addr: IpNet) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header.family = match addr {
        IpNet::V4(_) => AddressFamily::Inet,
        IpNet::V6(_) => AddressFamily::Inet6,
    };
    msg.header.prefix_len = addr.prefix_len();
    msg.header.index = index;
    msg.header.scope = AddressScope::Universe;
    msg.attributes.push(AddressAttribute::Local(addr.addr()));
    msg.attributes.push(AddressAttribute::Address(addr.addr()));
    msg
}

fn object(index: u32, addr: IpNet) -> String {
    format!("{addr} on link #{index}")
}

pub(crate) fn add_op(index: u32, addr: IpNet) -> Op {
    Op::ack(
        RouteNetlinkMessage::NewAddress(message(index, addr)),
        NLM_F_CREATE | NLM_F_EXCL,
        "add address",
        object(index, addr),
    )
}

impl Handle {
    /// Add an address; adding one that is already there is AlreadyExists.
    pub async fn add_address(&self, index: u32, addr: IpNet) -> Result<()> {
        self.run(add_op(index, addr)).await.map(drop)
    }

    /// Delete an address; one that is not there is NotFound.
    pub async fn delete_address(&self, index: u32, addr: IpNet) -> Result<()> {
        self.run(Op::ack(
            RouteNetlinkMessage::DelAddress(message(index, addr)),
            0,
            "delete address",
            object(index, addr),
        ))
        .await
        .map(drop)
    }

    /// Addresses of one link, or of every link.
    pub async fn addresses(&self, index: Option<u32>) -> Result<Vec<Address>> {
        let replies = self
            .run(Op::dump(
                RouteNetlinkMessage::GetAddress(AddressMessage::default()),
                "list addresses in",
                self.namespace().to_string(),
            ))
            .await?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) => from_message(a),
                _ => None,
            })
            .filter(|a| index.is_none_or(|i| i == a.index))
            .collect())
    }
}

fn from_message(msg: &AddressMessage) -> Option<Address> {
    // IFA_LOCAL is the interface's own address (IFA_ADDRESS is the peer on
    // point-to-point links); fall back to IFA_ADDRESS when it is missing.
    let mut local = None;
    let mut address = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            _ => {}
        }
    }
    let ip: IpAddr = local.or(address)?;
    let net = IpNet::new(ip, msg.header.prefix_len).ok()?;
    Some(Address {
        index: msg.header.index,
        address: net,
    })
}

impl Batch<'_> {
    pub fn add_address(self, index: u32, addr: IpNet) -> Self {
        self.push(add_op(index, addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_a_message() {
        let net: IpNet = "10.1.2.3/24".parse().unwrap();
        let parsed = from_message(&message(4, net)).unwrap();
        assert_eq!(
            parsed,
            Address {
                index: 4,
                address: net
            }
        );
        let v6: IpNet = "fd00::5/64".parse().unwrap();
        assert_eq!(from_message(&message(4, v6)).unwrap().address, v6);
    }

    #[test]
    fn only_attributes_gvisor_accepts_are_sent() {
        let msg = message(1, "10.0.0.1/8".parse().unwrap());
        for attr in &msg.attributes {
            assert!(matches!(
                attr,
                AddressAttribute::Local(_) | AddressAttribute::Address(_)
            ));
        }
    }
}
