//! `proxy`: no NAT at all. TCP from the network to anywhere but the network
//! itself is redirected (`REDIRECT`, which needs no conntrack match and no
//! MASQUERADE and works in gVisor) to the daemon's transparent proxy, which
//! reads the original destination and opens the connection itself. Nothing
//! is forwarded: other protocols, and IPv6 when it cannot be redirected, are
//! dropped. Forwarding is not needed and not touched.
//!
//! REDIRECT rewrites the destination to the bridge's first address (the
//! gateway), so the daemon serves the proxy port on the gateway addresses.

use std::sync::Arc;

use super::error::EgressError;
use super::firewall::Firewall;
use super::ruleset::{drop_forwarded, NetworkRules};
use super::runner::CommandRunner;
use super::{BackendKind, Description, EgressBackend, NetworkEgress};

/// The transparent proxy's ports in the daemon's namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyPorts {
    pub v4: u16,
    /// None: IPv6 is not proxied (and therefore dropped).
    pub v6: Option<u16>,
}

pub struct ProxyBackend<R> {
    firewall: Arc<Firewall<R>>,
    ports: ProxyPorts,
}

impl<R: CommandRunner> ProxyBackend<R> {
    pub fn new(firewall: Arc<Firewall<R>>, ports: ProxyPorts) -> Result<Self, EgressError> {
        if ports.v4 == 0 || ports.v6 == Some(0) {
            return Err(EgressError::Invalid {
                what: "proxy port",
                value: "0".into(),
                reason: "the transparent proxy needs a port in 1-65535".into(),
            });
        }
        Ok(ProxyBackend { firewall, ports })
    }

    pub fn ports(&self) -> ProxyPorts {
        self.ports
    }

    /// The rules for a network: (IPv4, IPv6).
    pub fn rules(&self, network: &NetworkEgress) -> (NetworkRules, NetworkRules) {
        let br = &network.bridge;
        let v4 = NetworkRules {
            prerouting: vec![
                format!("-i {br} -d {} -j RETURN", network.subnet4),
                format!("-i {br} -p tcp -j REDIRECT --to-ports {}", self.ports.v4),
            ],
            forward: vec![drop_forwarded(br)],
            ..Default::default()
        };
        let v6 = match (network.subnet6, self.ports.v6) {
            (Some(subnet), Some(port)) => NetworkRules {
                prerouting: vec![
                    format!("-i {br} -d {subnet} -j RETURN"),
                    format!("-i {br} -d fe80::/10 -j RETURN"),
                    format!("-i {br} -p tcp -j REDIRECT --to-ports {port}"),
                ],
                forward: vec![drop_forwarded(br)],
                ..Default::default()
            },
            _ if self.firewall.ipv6() || network.subnet6.is_some() => NetworkRules {
                forward: vec![drop_forwarded(br)],
                ..Default::default()
            },
            _ => NetworkRules::default(),
        };
        (v4, v6)
    }
}

impl<R: CommandRunner> EgressBackend for ProxyBackend<R> {
    fn kind(&self) -> BackendKind {
        BackendKind::Proxy
    }

    async fn enable(&self, network: &NetworkEgress) -> Result<(), EgressError> {
        network.validate()?;
        let (mut v4, v6) = self.rules(network);
        v4.prerouting.splice(0..0, network.dns_rules());
        self.firewall
            .apply_network(&network.bridge, &v4, &v6)
            .await?;
        tracing::info!(network = %network.name, bridge = %network.bridge, port = self.ports.v4, port6 = ?self.ports.v6, "egress proxy: TCP redirected to the transparent proxy");
        Ok(())
    }

    async fn disable(&self, network: &NetworkEgress) -> Result<(), EgressError> {
        self.firewall.remove_network(&network.bridge).await
    }

    async fn remove_all(&self) -> Result<(), EgressError> {
        self.firewall.remove_all().await
    }

    fn describe(&self) -> Description {
        let v6 = match self.ports.v6 {
            Some(p) => format!("IPv6 TCP to port {p}"),
            None => "IPv6 dropped".into(),
        };
        Description {
            kind: BackendKind::Proxy,
            tool: self.firewall.tool().name().to_string(),
            detail: format!(
                "IPv4 TCP redirected to the transparent proxy on port {}, {v6}; nothing forwarded",
                self.ports.v4
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::egress::firewall::{tests::runner, Tool};

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

    #[tokio::test]
    async fn redirects_tcp_in_both_families_and_forwards_nothing() {
        let fw = Arc::new(Firewall::new(runner("", ""), Tool::Legacy, true));
        let b = ProxyBackend::new(
            fw.clone(),
            ProxyPorts {
                v4: 15001,
                v6: Some(15002),
            },
        )
        .unwrap();
        b.enable(&network(true)).await.unwrap();
        let r: Vec<String> = fw
            .runner()
            .calls()
            .into_iter()
            .filter_map(|c| c.stdin)
            .collect();
        assert_eq!(
            r[0],
            "\
*filter
:CONDUCTOR-EGRESS-FWD - [0:0]
:CNE-F-cn-web - [0:0]
-I FORWARD 1 -j CONDUCTOR-EGRESS-FWD
-A CNE-F-cn-web -i cn-web ! -o cn-web -j DROP
-A CONDUCTOR-EGRESS-FWD -j CNE-F-cn-web
COMMIT
*nat
:CONDUCTOR-EGRESS-PRE - [0:0]
:CNE-P-cn-web - [0:0]
-I PREROUTING 1 -j CONDUCTOR-EGRESS-PRE
-A CNE-P-cn-web -i cn-web -d 10.89.0.0/24 -j RETURN
-A CNE-P-cn-web -i cn-web -p tcp -j REDIRECT --to-ports 15001
-A CONDUCTOR-EGRESS-PRE -j CNE-P-cn-web
COMMIT
"
        );
        assert!(r[1].contains("-A CNE-P-cn-web -i cn-web -d fd00:89::/64 -j RETURN\n-A CNE-P-cn-web -i cn-web -d fe80::/10 -j RETURN\n-A CNE-P-cn-web -i cn-web -p tcp -j REDIRECT --to-ports 15002\n"), "{}", r[1]);
        assert!(r[1].contains("-A CNE-F-cn-web -i cn-web ! -o cn-web -j DROP"));
    }

    #[tokio::test]
    async fn without_an_ipv6_port_ipv6_is_dropped() {
        let fw = Arc::new(Firewall::new(runner("", ""), Tool::Legacy, true));
        let b = ProxyBackend::new(
            fw,
            ProxyPorts {
                v4: 15001,
                v6: None,
            },
        )
        .unwrap();
        let (_, v6) = b.rules(&network(true));
        assert!(v6.prerouting.is_empty());
        assert_eq!(v6.forward, vec!["-i cn-web ! -o cn-web -j DROP"]);
    }

    #[test]
    fn port_zero_is_refused() {
        let fw = Arc::new(Firewall::new(runner("", ""), Tool::Legacy, true));
        assert!(ProxyBackend::new(fw, ProxyPorts { v4: 0, v6: None }).is_err());
    }
}
