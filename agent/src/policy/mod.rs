//! The egress policy (issue 12): per network, allow and deny rules by
//! domain, CIDR and port over a preset (`open`, `balanced`, `locked`).
//!
//! - [`rule`]: one rule's syntax; errors carry the column.
//! - [`tables`]: the lookup structures (prefix tables, suffix maps, port
//!   intervals) that decide in time independent of the rule count.
//! - [`compiled`]: a policy, its precedence and its decisions.
//! - [`store`]: every network's policy, persisted in the state directory,
//!   changed at runtime; the subnets that tell a client's network.
//! - [`stats`]: decisions counted per network.
//! - [`deciders`]: the adapters the egress proxy and the DNS engine call.
//!
//! The `nat` backend enforces the CIDR and port part in the kernel
//! (`egress::policy_rules`).

pub mod compiled;
pub mod deciders;
pub mod rule;
pub mod stats;
pub mod store;
pub mod tables;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

use ipnet::IpNet;

pub use compiled::{Compiled, PolicySpec, Preset};
pub use deciders::{DnsPolicy, EgressPolicy};
pub use store::{Policies, PolicyApplier, PolicyView};

use crate::egress::policy_rules::{Match, NatPolicy, PolicySource};
use rule::{Action, Target};

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A rule that does not parse (the list is refused whole).
    #[error("{0}")]
    Rule(rule::ListError),
    #[error("{count} rules is more than the {max} a network can have")]
    TooMany { count: usize, max: usize },
    #[error("invalid network name {0:?}: 1-128 letters, digits, '-', '_' or '.'")]
    BadNetwork(String),
    #[error("network {network:?} has no rule {rule:?}")]
    NoSuchRule { network: String, rule: String },
    #[error("policy state {}: {reason}", path.display())]
    State { path: PathBuf, reason: String },
}

impl From<PolicyError> for crate::Error {
    fn from(e: PolicyError) -> crate::Error {
        match e {
            PolicyError::Rule(ref l) => crate::Error::Invalid {
                what: "policy rule",
                value: l.text.clone(),
                reason: e.to_string(),
            },
            PolicyError::TooMany { count, .. } => {
                crate::Error::invalid("policy rule count", count, e.to_string())
            }
            PolicyError::BadNetwork(ref n) => {
                crate::Error::invalid("network name", n.clone(), e.to_string())
            }
            PolicyError::NoSuchRule { rule, .. } => crate::Error::not_found("policy rule", rule),
            PolicyError::State { .. } => crate::Error::Internal(e.to_string()),
        }
    }
}

impl Compiled {
    /// The part of the policy the kernel can enforce.
    pub fn nat_policy(&self) -> NatPolicy {
        let mut p = NatPolicy {
            locked: self.spec().preset == Preset::Locked,
            preset_deny: self.preset_denied().into_iter().map(|(n, _)| n).collect(),
            ..NatPolicy::default()
        };
        for r in self.rules() {
            let m = match &r.target {
                Target::Cidr(n) => Match::Cidr(*n),
                Target::Port { lo, hi } => Match::Ports { lo: *lo, hi: *hi },
                Target::Domain { .. } => continue,
            };
            match r.action {
                Action::Deny => p.deny.push(m),
                Action::Allow => p.allow.push(m),
            }
        }
        p
    }
}

impl PolicySource for Policies {
    fn nat_policy(&self, network: &str) -> Option<NatPolicy> {
        self.get(network).map(|c| c.nat_policy())
    }
}

/// The subnets of a network as the store keys clients by.
pub fn subnets(v4: ipnet::Ipv4Net, v6: Option<ipnet::Ipv6Net>) -> Vec<IpNet> {
    let mut out = vec![IpNet::V4(v4)];
    out.extend(v6.map(IpNet::V6));
    out
}
