//! The stored model: networks and endpoints as persisted, and what an
//! endpoint attaches. Plain data: no I/O.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What an endpoint attaches: a named namespace, a namespace file, or the
/// namespace of a process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Target {
    Netns(String),
    NetnsPath(PathBuf),
    Pid(i32),
}

impl Target {
    /// Exactly one of the three must be given.
    pub fn from_parts(
        netns: Option<String>,
        netns_path: Option<PathBuf>,
        pid: Option<i32>,
    ) -> Result<Target> {
        match (netns, netns_path, pid) {
            (Some(n), None, None) => {
                super::names::validate_netns_name(&n)?;
                Ok(Target::Netns(n))
            }
            (None, Some(p), None) => {
                if !p.is_absolute() {
                    return Err(Error::invalid(
                        "netns path",
                        p.display(),
                        "must be an absolute path",
                    ));
                }
                Ok(Target::NetnsPath(p))
            }
            (None, None, Some(pid)) => {
                if pid <= 0 {
                    return Err(Error::invalid("pid", pid, "must be a positive process id"));
                }
                Ok(Target::Pid(pid))
            }
            (None, None, None) => Err(Error::invalid(
                "target",
                "",
                "give one of netns, netns_path or pid",
            )),
            _ => Err(Error::invalid(
                "target",
                "",
                "give only one of netns, netns_path or pid",
            )),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Target::Netns(n) => format!("netns {n}"),
            Target::NetnsPath(p) => format!("netns path {}", p.display()),
            Target::Pid(p) => format!("pid {p}"),
        }
    }

    /// The namespace file, for the CNI result's `sandbox`.
    pub fn sandbox_path(&self) -> String {
        match self {
            Target::Netns(n) => format!("{}/{n}", netns::NETNS_RUN_DIR),
            Target::NetnsPath(p) => p.display().to_string(),
            Target::Pid(p) => format!("/proc/{p}/ns/net"),
        }
    }
}

/// Identity of a network namespace: (device, inode) of its namespace file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NsId {
    pub dev: u64,
    pub ino: u64,
}

/// A network as persisted and as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub name: String,
    pub bridge: String,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_subnet: Option<Ipv6Net>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_gateway: Option<Ipv6Addr>,
    pub mtu: u32,
    /// Seconds since the epoch.
    pub created: u64,
    /// No egress (Docker's `--internal`): traffic stays on the bridge.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub internal: bool,
}

impl Network {
    /// The gateway with the subnet's prefix, as it is put on the bridge.
    pub fn gateway_net(&self) -> Ipv4Net {
        // A prefix taken from a valid Ipv4Net is always valid.
        Ipv4Net::new(self.gateway, self.subnet.prefix_len()).unwrap_or(self.subnet)
    }

    /// Check a network record with the rules the API applies on create, so
    /// a damaged or edited record is refused instead of trusted. The error
    /// names the field.
    pub fn validate(&self) -> Result<()> {
        super::names::validate_network_name(&self.name)?;
        super::names::validate_ifname("bridge", &self.bridge)?;
        crate::ipam::check_subnet_v4(self.subnet)?;
        crate::ipam::gateway_v4(self.subnet, Some(&self.gateway.to_string()))?;
        super::names::validate_mtu(self.mtu)?;
        match (self.ipv6_subnet, self.ipv6_gateway) {
            (None, None) => Ok(()),
            (Some(s), Some(g)) => {
                crate::ipam::check_subnet_v6(s)?;
                if !s.contains(&g) || g == s.network() {
                    return Err(Error::invalid(
                        "ipv6 gateway",
                        g,
                        format!("not a host address of {s}"),
                    ));
                }
                Ok(())
            }
            (Some(s), None) => Err(Error::invalid(
                "ipv6 gateway",
                "",
                format!("missing for {s}"),
            )),
            (None, Some(g)) => Err(Error::invalid(
                "ipv6 subnet",
                "",
                format!("missing for gateway {g}"),
            )),
        }
    }

    pub fn ipv6_gateway_net(&self) -> Option<Ipv6Net> {
        match (self.ipv6_subnet, self.ipv6_gateway) {
            (Some(s), Some(g)) => Ipv6Net::new(g, s.prefix_len()).ok(),
            _ => None,
        }
    }
}

/// An endpoint as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Unique id; also the name of the host end of the veth.
    pub id: String,
    pub network: String,
    pub target: Target,
    pub netns_id: NsId,
    /// Interface name inside the namespace.
    pub ifname: String,
    pub host_ifname: String,
    /// MAC of the interface inside the namespace.
    pub mac: String,
    /// Address with the subnet's prefix.
    pub ipv4: Ipv4Net,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Ipv6Net>,
    pub default_route: bool,
    pub created: u64,
    /// Set when a detach that does not wait has started: the record is a
    /// tombstone until the veth is gone (a restart finishes the job).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub detaching: bool,
}

/// Lifecycle of an endpoint in the running daemon (not persisted: after a
/// restart reconciliation decides from the kernel).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointState {
    Attaching,
    Attached,
    Detaching,
}

/// The MAC of an endpoint: locally administered, derived from its IPv4
/// address (as CNI's bridge plugin does), so it is known before creation.
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x0a, 0x58, o[0], o[1], o[2], o[3]]
}

pub fn format_mac(mac: &[u8]) -> String {
    netns::format_mac(mac)
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_need_exactly_one() {
        assert!(Target::from_parts(None, None, None).is_err());
        assert!(Target::from_parts(Some("a".into()), None, Some(1)).is_err());
        assert!(Target::from_parts(None, None, Some(0)).is_err());
        assert!(Target::from_parts(None, Some("rel/path".into()), None).is_err());
        assert!(Target::from_parts(Some("a/b".into()), None, None).is_err());
        assert_eq!(
            Target::from_parts(None, None, Some(7)).unwrap(),
            Target::Pid(7)
        );
    }

    #[test]
    fn target_json_shape() {
        let t = Target::Netns("x".into());
        assert_eq!(serde_json::to_string(&t).unwrap(), r#"{"netns":"x"}"#);
        let t: Target = serde_json::from_str(r#"{"pid":5}"#).unwrap();
        assert_eq!(t, Target::Pid(5));
    }

    #[test]
    fn damaged_network_records_are_refused_by_field() {
        let good = Network {
            name: "n".into(),
            bridge: "cn-n".into(),
            subnet: "10.89.0.0/24".parse().unwrap(),
            gateway: "10.89.0.1".parse().unwrap(),
            ipv6_subnet: None,
            ipv6_gateway: None,
            mtu: 1500,
            created: 0,
            internal: false,
        };
        good.validate().unwrap();
        let mut outside = good.clone();
        outside.gateway = "10.1.2.3".parse().unwrap();
        assert!(outside
            .validate()
            .unwrap_err()
            .to_string()
            .contains("gateway"));
        let mut escape = good.clone();
        escape.name = "../../x".into();
        assert!(escape
            .validate()
            .unwrap_err()
            .to_string()
            .contains("../../x"));
        let mut mtu = good.clone();
        mtu.mtu = 12;
        assert!(mtu.validate().unwrap_err().to_string().contains("mtu"));
        let mut multicast = good;
        multicast.subnet = "224.0.0.0/24".parse().unwrap();
        multicast.gateway = "224.0.0.1".parse().unwrap();
        assert!(multicast.validate().is_err());
    }
}
