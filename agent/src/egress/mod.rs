//! Egress beyond the bridge: how traffic from a network's containers leaves
//! the sandbox. One trait, [`EgressBackend`], with three implementations
//! that depend on it (never the other way round):
//!
//! - [`nat::NatBackend`]: the kernel's NAT. MASQUERADE where the kernel has
//!   it; inside gVisor, SNAT to the uplink address (TCP and UDP only, the
//!   protocols gVisor translates; anything else is dropped rather than
//!   leaked with a private source address). gVisor 20240729's forwarding
//!   stalls bulk TCP, so there it is a choice by override only.
//! - [`proxy::ProxyBackend`]: no NAT at all. TCP from the network is
//!   redirected (iptables REDIRECT) to the daemon's transparent proxy
//!   (`conductor-egress`), which opens the connection itself; nothing else
//!   is forwarded.
//! - [`none::NoneBackend`]: internal, nothing is forwarded.
//!
//! IPv6 never bypasses the backend: each one handles or drops it.
//! [`choose::choose`] picks a backend from what `doctor` found.
//!
//! All rules live in chains of our own (see [`firewall`]), rebuilt whole
//! for a network on every `enable`, so re-applying after a crash never
//! duplicates a rule, and [`EgressBackend::remove_all`] finds everything.

pub mod choose;
pub mod error;
pub mod firewall;
pub mod nat;
pub mod none;
pub mod policy_rules;
pub mod proxy;
pub mod ruleset;
pub mod runner;
pub mod runtime;
pub mod stack;

use std::fmt;
use std::future::Future;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

pub use error::EgressError;
pub use runtime::{Egress, EgressSettings};

/// IPv4 or IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// The backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Nat,
    Proxy,
    None,
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Nat => "nat",
            BackendKind::Proxy => "proxy",
            BackendKind::None => "none",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for BackendKind {
    type Err = EgressError;
    fn from_str(s: &str) -> Result<Self, EgressError> {
        match s {
            "nat" => Ok(BackendKind::Nat),
            "proxy" => Ok(BackendKind::Proxy),
            "none" => Ok(BackendKind::None),
            other => Err(EgressError::Invalid {
                what: "egress backend",
                value: other.to_string(),
                reason: "expected nat, proxy or none".into(),
            }),
        }
    }
}

/// The network whose egress a backend manages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkEgress {
    /// For messages only.
    pub name: String,
    /// The bridge in the daemon's namespace; names our chains.
    pub bridge: String,
    pub subnet4: Ipv4Net,
    pub gateway4: Ipv4Addr,
    pub subnet6: Option<Ipv6Net>,
    pub gateway6: Option<Ipv6Addr>,
    /// DNS from the network to any resolver goes to this address instead
    /// (the daemon's forwarder on the gateway), whatever the backend: its
    /// containers' resolvers may be unreachable from inside the sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<std::net::SocketAddrV4>,
}

impl NetworkEgress {
    /// The IPv4 PREROUTING rules that send the network's DNS to `dns`;
    /// they go first in every backend's chain.
    pub fn dns_rules(&self) -> Vec<String> {
        let Some(to) = self.dns else {
            return Vec::new();
        };
        ["udp", "tcp"]
            .iter()
            .map(|p| {
                format!(
                    "-i {} -p {p} --dport 53 -j DNAT --to-destination {to}",
                    self.bridge
                )
            })
            .collect()
    }

    /// Refuse values that cannot make valid rules, naming the value.
    pub fn validate(&self) -> Result<(), EgressError> {
        netns::validate_ifname(&self.bridge).map_err(|e| EgressError::Invalid {
            what: "bridge name",
            value: self.bridge.clone(),
            reason: e.to_string(),
        })?;
        // iptables takes chain names as single words.
        if self
            .bridge
            .chars()
            .any(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            return Err(EgressError::Invalid {
                what: "bridge name",
                value: self.bridge.clone(),
                reason: "only letters, digits, '-', '_' and '.' can name firewall chains".into(),
            });
        }
        if !self.subnet4.contains(&self.gateway4) {
            return Err(EgressError::Invalid {
                what: "IPv4 gateway",
                value: self.gateway4.to_string(),
                reason: format!("not in the network's subnet {}", self.subnet4),
            });
        }
        if let (Some(net), Some(gw)) = (self.subnet6, self.gateway6) {
            if !net.contains(&gw) {
                return Err(EgressError::Invalid {
                    what: "IPv6 gateway",
                    value: gw.to_string(),
                    reason: format!("not in the network's subnet {net}"),
                });
            }
        }
        Ok(())
    }
}

/// What a backend says about itself, for `status` and `doctor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Description {
    pub kind: BackendKind,
    /// The firewall tool it drives (`iptables-legacy`, `iptables-nft`).
    pub tool: String,
    /// One line: how traffic leaves, per family.
    pub detail: String,
}

/// One way for a network's traffic to leave the sandbox. Every method is
/// idempotent; `enable` replaces whatever this or another backend set up for
/// the network before.
pub trait EgressBackend: Send + Sync {
    fn kind(&self) -> BackendKind;

    /// Set up (or rebuild) egress for a network.
    fn enable(
        &self,
        network: &NetworkEgress,
    ) -> impl Future<Output = Result<(), EgressError>> + Send;

    /// Remove the network's rules (any backend's); forwarding stays as is,
    /// other networks may need it.
    fn disable(
        &self,
        network: &NetworkEgress,
    ) -> impl Future<Output = Result<(), EgressError>> + Send;

    /// Remove every rule and chain of ours, whatever network or backend made
    /// them (daemon start-up and `docker down`).
    fn remove_all(&self) -> impl Future<Output = Result<(), EgressError>> + Send;

    fn describe(&self) -> Description;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> NetworkEgress {
        NetworkEgress {
            name: "web".into(),
            bridge: "cn-web".into(),
            subnet4: "10.89.0.0/24".parse().unwrap(),
            gateway4: "10.89.0.1".parse().unwrap(),
            subnet6: Some("fd00:89::/64".parse().unwrap()),
            gateway6: Some("fd00:89::1".parse().unwrap()),
            dns: None,
        }
    }

    #[test]
    fn networks_are_validated_naming_the_value() {
        assert!(net().validate().is_ok());
        for (f, needle) in [
            (
                Box::new(|n: &mut NetworkEgress| n.bridge = "a-very-long-bridge-name".into())
                    as Box<dyn Fn(&mut NetworkEgress)>,
                "a-very-long-bridge-name",
            ),
            (Box::new(|n| n.bridge = "br 0".into()), "br 0"),
            (Box::new(|n| n.bridge = "br!x".into()), "br!x"),
            (
                Box::new(|n| n.gateway4 = "10.90.0.1".parse().unwrap()),
                "10.90.0.1",
            ),
            (
                Box::new(|n| n.gateway6 = Some("fd01::1".parse().unwrap())),
                "fd01::1",
            ),
        ] {
            let mut n = net();
            f(&mut n);
            let e = n.validate().unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn kinds_parse() {
        assert_eq!("proxy".parse::<BackendKind>().unwrap(), BackendKind::Proxy);
        let e = "masq".parse::<BackendKind>().unwrap_err().to_string();
        assert!(e.contains("masq"), "{e}");
    }
}
