//! `nat`: the kernel's NAT.
//!
//! - `Masquerade` (a real kernel): `-s SUBNET ! -d SUBNET -j MASQUERADE`,
//!   every protocol, IPv6 too when the network has an IPv6 subnet; forward
//!   rules accept the network's traffic out (and, with conntrack, its replies
//!   back) ahead of a DROP policy such as Docker's.
//! - `Snat` (gVisor, which has no MASQUERADE): SNAT to the uplink address,
//!   which gVisor accepts only with `-p tcp` or `-p udp`; measured there,
//!   both are translated, while ICMP and other protocols would be forwarded
//!   with the container's private source address, so they are dropped.
//!   Beware: gVisor 20240729's forwarding stalls a bulk TCP stream after a
//!   few hundred KB and then wedges the uplink; the chooser prefers `proxy`
//!   there.
//!
//! Forwarding is switched on after the rules are in place, never before.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};

use serde::{Deserialize, Serialize};

use super::error::EgressError;
use super::firewall::Firewall;
use super::policy_rules::PolicySource;
use super::ruleset::{drop_forwarded, NetworkRules};
use super::runner::CommandRunner;
use super::stack::Stack;
use super::{BackendKind, Description, EgressBackend, Family, NetworkEgress};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NatMode {
    /// MASQUERADE; `conntrack`: the conntrack match works (replies can be
    /// accepted explicitly).
    Masquerade { conntrack: bool },
    /// SNAT of TCP and UDP to the uplink address.
    Snat,
}

pub struct NatBackend<R, S> {
    firewall: Arc<Firewall<R>>,
    stack: Arc<S>,
    mode: NatMode,
    /// The last thing `enable` found out, for `describe`.
    state: Mutex<String>,
    /// The egress policy's CIDR and port rules, put ahead of ours.
    policy: OnceLock<Arc<dyn PolicySource>>,
}

/// Protocols gVisor's SNAT translates.
const SNAT_PROTOCOLS: [&str; 2] = ["tcp", "udp"];

impl<R: CommandRunner, S: Stack> NatBackend<R, S> {
    pub fn new(firewall: Arc<Firewall<R>>, stack: Arc<S>, mode: NatMode) -> Self {
        NatBackend {
            firewall,
            stack,
            mode,
            state: Mutex::new(String::new()),
            policy: OnceLock::new(),
        }
    }

    /// Where `enable` finds each network's policy (set once).
    pub fn set_policy_source(&self, source: Arc<dyn PolicySource>) {
        let _ = self.policy.set(source);
    }

    /// One family's rules: translated when `subnet` is given (and, for SNAT,
    /// an uplink address), else dropped.
    fn family_rules(
        &self,
        bridge: &str,
        subnet: Option<String>,
        uplink: Option<IpAddr>,
    ) -> NetworkRules {
        let Some(subnet) = subnet else {
            return NetworkRules {
                forward: vec![drop_forwarded(bridge)],
                ..Default::default()
            };
        };
        let out = format!("-i {bridge} ! -o {bridge}");
        match (self.mode, uplink) {
            (NatMode::Masquerade { conntrack }, _) => {
                let mut forward = vec![format!("{out} -j ACCEPT")];
                if conntrack {
                    forward.push(format!(
                        "-o {bridge} ! -i {bridge} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
                    ));
                }
                NetworkRules {
                    postrouting: vec![format!("-s {subnet} ! -d {subnet} -j MASQUERADE")],
                    forward,
                    ..Default::default()
                }
            }
            (NatMode::Snat, Some(uplink)) => {
                let mut r = NetworkRules::default();
                for p in SNAT_PROTOCOLS {
                    r.postrouting.push(format!(
                        "-s {subnet} ! -d {subnet} -p {p} -j SNAT --to-source {uplink}"
                    ));
                    r.forward.push(format!("{out} -p {p} -j ACCEPT"));
                }
                r.forward.push(drop_forwarded(bridge));
                r
            }
            (NatMode::Snat, None) => NetworkRules {
                forward: vec![drop_forwarded(bridge)],
                ..Default::default()
            },
        }
    }

    async fn uplink(&self, family: Family) -> Result<Option<IpAddr>, EgressError> {
        if self.mode == NatMode::Snat {
            self.stack.uplink_address(family).await
        } else {
            Ok(None)
        }
    }
}

impl<R: CommandRunner, S: Stack> EgressBackend for NatBackend<R, S> {
    fn kind(&self) -> BackendKind {
        BackendKind::Nat
    }

    async fn enable(&self, network: &NetworkEgress) -> Result<(), EgressError> {
        network.validate()?;
        let bridge = &network.bridge;
        let uplink4 = self.uplink(Family::V4).await?;
        if self.mode == NatMode::Snat && uplink4.is_none() {
            return Err(EgressError::NoUplink {
                family: "IPv4",
                reason: "the daemon's namespace has no IPv4 default route to SNAT to".into(),
            });
        }
        let mut v4 = self.family_rules(bridge, Some(network.subnet4.to_string()), uplink4);
        v4.prerouting.splice(0..0, network.dns_rules());
        let uplink6 = match network.subnet6 {
            Some(_) => self.uplink(Family::V6).await?,
            None => None,
        };
        let subnet6 = network.subnet6.map(|s| s.to_string());
        let v6_out = subnet6.is_some() && (self.mode != NatMode::Snat || uplink6.is_some());
        let mut v6 = if self.firewall.ipv6() || subnet6.is_some() {
            self.family_rules(bridge, subnet6, uplink6)
        } else {
            NetworkRules::default()
        };
        let policy = self.policy.get().and_then(|p| p.nat_policy(&network.name));
        if let Some(p) = &policy {
            v4.forward = p.forward_rules(bridge, Family::V4, &v4.forward);
            if !v6.forward.is_empty() {
                v6.forward = p.forward_rules(bridge, Family::V6, &v6.forward);
            }
        }
        // Container to container on one bridge: with br_netfilter loaded
        // such frames traverse FORWARD too, where Docker's DROP policy would
        // end them (Docker's own bridges have the same rule).
        for rules in [&mut v4, &mut v6] {
            if !rules.forward.is_empty() {
                rules
                    .forward
                    .insert(0, format!("-i {bridge} -o {bridge} -j ACCEPT"));
            }
        }
        self.firewall.apply_network(bridge, &v4, &v6).await?;
        self.stack.enable_forwarding(Family::V4).await?;
        let v6_forwarding = if v6_out {
            self.stack.enable_forwarding(Family::V6).await?
        } else {
            false
        };
        let how = match (self.mode, uplink4) {
            (NatMode::Snat, Some(u)) => format!("SNAT to {u} (TCP, UDP; other protocols dropped)"),
            _ => "MASQUERADE".to_string(),
        };
        let v6_how = match (v6_out, v6_forwarding, uplink6) {
            (true, true, Some(u)) => format!("SNAT to {u} (TCP, UDP)"),
            (true, true, None) => "MASQUERADE".into(),
            (true, false, _) => "dropped (this stack cannot forward IPv6)".into(),
            _ => "dropped".into(),
        };
        let with_policy = if policy.is_some() {
            "; egress policy (CIDR, port) enforced"
        } else {
            ""
        };
        let line = format!("{bridge}: IPv4 {how}; IPv6 {v6_how}{with_policy}");
        tracing::info!(network = %network.name, "egress nat: {line}");
        if let Ok(mut s) = self.state.lock() {
            *s = line;
        }
        Ok(())
    }

    async fn disable(&self, network: &NetworkEgress) -> Result<(), EgressError> {
        self.firewall.remove_network(&network.bridge).await
    }

    async fn remove_all(&self) -> Result<(), EgressError> {
        self.firewall.remove_all().await
    }

    fn describe(&self) -> Description {
        let mode = match self.mode {
            NatMode::Masquerade { .. } => "MASQUERADE",
            NatMode::Snat => "SNAT to the uplink address (TCP, UDP)",
        };
        let last = self.state.lock().map(|s| s.clone()).unwrap_or_default();
        Description {
            kind: BackendKind::Nat,
            tool: self.firewall.tool().name().to_string(),
            detail: if last.is_empty() {
                mode.to_string()
            } else {
                format!("{mode}; last enabled {last}")
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::egress::firewall::{tests::runner, Tool};
    use crate::egress::stack::FakeStack;

    fn network(v6: bool) -> NetworkEgress {
        NetworkEgress {
            name: "web".into(),
            bridge: "cn-web".into(),
            subnet4: "10.89.0.0/24".parse().unwrap(),
            gateway4: "10.89.0.1".parse().unwrap(),
            subnet6: v6.then(|| "fd00:89::/64".parse().unwrap()),
            gateway6: v6.then(|| "fd00:89::1".parse().unwrap()),
            dns: None,
        }
    }

    fn restores(fw: &Firewall<crate::egress::runner::ScriptedRunner>) -> Vec<String> {
        fw.runner()
            .calls()
            .into_iter()
            .filter_map(|c| c.stdin)
            .collect()
    }

    #[tokio::test]
    async fn masquerade_rules_on_a_real_kernel() {
        let fw = Arc::new(Firewall::new(runner("", ""), Tool::Nft, true));
        let stack = Arc::new(FakeStack {
            ipv6_switch: true,
            ..Default::default()
        });
        let b = NatBackend::new(
            fw.clone(),
            stack.clone(),
            NatMode::Masquerade { conntrack: true },
        );
        b.enable(&network(true)).await.unwrap();
        let r = restores(&fw);
        assert_eq!(
            r[0],
            "\
*filter
:CONDUCTOR-EGRESS-FWD - [0:0]
:CNE-F-cn-web - [0:0]
-I FORWARD 1 -j CONDUCTOR-EGRESS-FWD
-A CNE-F-cn-web -i cn-web -o cn-web -j ACCEPT
-A CNE-F-cn-web -i cn-web ! -o cn-web -j ACCEPT
-A CNE-F-cn-web -o cn-web ! -i cn-web -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A CONDUCTOR-EGRESS-FWD -j CNE-F-cn-web
COMMIT
*nat
:CONDUCTOR-EGRESS-POST - [0:0]
:CNE-S-cn-web - [0:0]
-I POSTROUTING 1 -j CONDUCTOR-EGRESS-POST
-A CNE-S-cn-web -s 10.89.0.0/24 ! -d 10.89.0.0/24 -j MASQUERADE
-A CONDUCTOR-EGRESS-POST -j CNE-S-cn-web
COMMIT
"
        );
        assert!(r[1].contains("-A CNE-S-cn-web -s fd00:89::/64 ! -d fd00:89::/64 -j MASQUERADE"));
        assert_eq!(
            *stack.switched.lock().unwrap(),
            vec![Family::V4, Family::V6]
        );
        assert!(
            b.describe().detail.contains("IPv6 MASQUERADE"),
            "{:?}",
            b.describe()
        );
    }

    #[tokio::test]
    async fn snat_rules_in_gvisor_translate_tcp_and_udp_and_drop_the_rest() {
        let fw = Arc::new(Firewall::new(runner("", ""), Tool::Legacy, true));
        let stack = Arc::new(FakeStack {
            uplink4: Some("192.0.2.1".parse().unwrap()),
            ..Default::default()
        });
        let b = NatBackend::new(fw.clone(), stack.clone(), NatMode::Snat);
        b.enable(&network(true)).await.unwrap();
        let r = restores(&fw);
        assert_eq!(
            r[0],
            "\
*filter
:CONDUCTOR-EGRESS-FWD - [0:0]
:CNE-F-cn-web - [0:0]
-I FORWARD 1 -j CONDUCTOR-EGRESS-FWD
-A CNE-F-cn-web -i cn-web -o cn-web -j ACCEPT
-A CNE-F-cn-web -i cn-web ! -o cn-web -p tcp -j ACCEPT
-A CNE-F-cn-web -i cn-web ! -o cn-web -p udp -j ACCEPT
-A CNE-F-cn-web -i cn-web ! -o cn-web -j DROP
-A CONDUCTOR-EGRESS-FWD -j CNE-F-cn-web
COMMIT
*nat
:CONDUCTOR-EGRESS-POST - [0:0]
:CNE-S-cn-web - [0:0]
-I POSTROUTING 1 -j CONDUCTOR-EGRESS-POST
-A CNE-S-cn-web -s 10.89.0.0/24 ! -d 10.89.0.0/24 -p tcp -j SNAT --to-source 192.0.2.1
-A CNE-S-cn-web -s 10.89.0.0/24 ! -d 10.89.0.0/24 -p udp -j SNAT --to-source 192.0.2.1
-A CONDUCTOR-EGRESS-POST -j CNE-S-cn-web
COMMIT
"
        );
        // No IPv6 uplink: IPv6 from the bridge is dropped, not forwarded.
        assert_eq!(
            r[1],
            "\
*filter
:CONDUCTOR-EGRESS-FWD - [0:0]
:CNE-F-cn-web - [0:0]
-I FORWARD 1 -j CONDUCTOR-EGRESS-FWD
-A CNE-F-cn-web -i cn-web -o cn-web -j ACCEPT
-A CNE-F-cn-web -i cn-web ! -o cn-web -j DROP
-A CONDUCTOR-EGRESS-FWD -j CNE-F-cn-web
COMMIT
"
        );
        assert_eq!(*stack.switched.lock().unwrap(), vec![Family::V4]);
        let d = b.describe().detail;
        assert!(
            d.contains("SNAT to 192.0.2.1") && d.contains("IPv6 dropped"),
            "{d}"
        );
    }

    #[tokio::test]
    async fn snat_without_a_default_route_is_an_error_before_any_rule() {
        let fw = Arc::new(Firewall::new(runner("", ""), Tool::Legacy, true));
        let b = NatBackend::new(fw.clone(), Arc::new(FakeStack::default()), NatMode::Snat);
        let e = b.enable(&network(false)).await.unwrap_err().to_string();
        assert!(e.contains("IPv4") && e.contains("default route"), "{e}");
        assert!(fw.runner().calls().is_empty());
    }
}
