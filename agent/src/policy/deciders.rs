//! The policies plugged into the engines: the egress proxy's
//! [`conductor_egress::Policy`] and the DNS engine's
//! [`conductor_dns::QueryPolicy`]. Both log every decision and count it
//! for the network.

use std::sync::Arc;

use conductor_dns::{PolicyQuery, QueryPolicy, Verdict as DnsVerdict};
use conductor_egress::{Decision, Policy, Request};

use super::store::Policies;

/// The proxy's policy: the network is the listener's label when it has
/// one, else the one whose subnet holds the client's address. A client on
/// no known network is decided by no policy (open): the proxy only gets
/// what the backends redirect from networks they enabled.
pub struct EgressPolicy(pub Arc<Policies>);

impl Policy for EgressPolicy {
    fn decide(&self, r: &Request<'_>) -> Decision {
        let network = match r.network {
            Some(n) => Some(n.to_string()),
            None => self.0.network_of(r.source.ip()),
        };
        let Some(network) = network else {
            return Decision::Allow;
        };
        let Some(policy) = self.0.get(&network) else {
            self.0.stats_of(&network).connection(true, "open");
            return Decision::Allow;
        };
        let v = policy.decide(r.host, r.ip, r.port);
        self.0.stats_of(&network).connection(v.allow, v.rule);
        let decision = if v.allow { "allow" } else { "deny" };
        tracing::info!(target: "conductor_netd::policy", decision, rule = v.rule, %network, mode = %r.mode, source = %r.source, host = r.host, ip = ?r.ip, port = r.port, "egress policy");
        if v.allow {
            Decision::Allow
        } else {
            Decision::Deny {
                rule: format!("{} (network {network})", v.rule),
            }
        }
    }

    fn wants_host_name(&self) -> bool {
        self.0.uses_names()
    }
}

/// One network's policy on DNS queries (set as the scope's or the
/// listener's policy).
pub struct DnsPolicy {
    pub policies: Arc<Policies>,
    pub network: String,
}

impl QueryPolicy for DnsPolicy {
    fn check(&self, q: &PolicyQuery<'_>) -> DnsVerdict {
        let Some(policy) = self.policies.get(&self.network) else {
            return DnsVerdict::Allow;
        };
        let v = policy.decide_name(q.name);
        self.policies.stats_of(&self.network).query(v.allow, v.rule);
        let decision = if v.allow { "allow" } else { "refuse" };
        tracing::info!(target: "conductor_netd::policy", decision, rule = v.rule, network = %self.network, source = %q.source, name = q.name, qtype = %q.qtype, "dns policy");
        if v.allow {
            DnsVerdict::Allow
        } else {
            DnsVerdict::Refuse
        }
    }
}
