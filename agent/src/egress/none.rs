//! `none`: an internal network. Nothing from the bridge is forwarded, in
//! either family; the containers still reach the gateway (DNS, the daemon's
//! services) and each other.

use std::sync::Arc;

use super::error::EgressError;
use super::firewall::Firewall;
use super::ruleset::{drop_forwarded, NetworkRules};
use super::runner::CommandRunner;
use super::{BackendKind, Description, EgressBackend, NetworkEgress};

pub struct NoneBackend<R> {
    firewall: Arc<Firewall<R>>,
}

impl<R: CommandRunner> NoneBackend<R> {
    pub fn new(firewall: Arc<Firewall<R>>) -> Self {
        NoneBackend { firewall }
    }

    /// The rules for a network: (IPv4, IPv6).
    pub fn rules(&self, network: &NetworkEgress) -> (NetworkRules, NetworkRules) {
        let drop = NetworkRules {
            forward: vec![drop_forwarded(&network.bridge)],
            ..Default::default()
        };
        let v6 = if self.firewall.ipv6() || network.subnet6.is_some() {
            drop.clone()
        } else {
            NetworkRules::default()
        };
        (drop, v6)
    }
}

impl<R: CommandRunner> EgressBackend for NoneBackend<R> {
    fn kind(&self) -> BackendKind {
        BackendKind::None
    }

    async fn enable(&self, network: &NetworkEgress) -> Result<(), EgressError> {
        network.validate()?;
        let (mut v4, v6) = self.rules(network);
        v4.prerouting.splice(0..0, network.dns_rules());
        self.firewall
            .apply_network(&network.bridge, &v4, &v6)
            .await?;
        tracing::info!(network = %network.name, bridge = %network.bridge, "egress none: nothing forwarded");
        Ok(())
    }

    async fn disable(&self, network: &NetworkEgress) -> Result<(), EgressError> {
        self.firewall.remove_network(&network.bridge).await
    }

    async fn remove_all(&self) -> Result<(), EgressError> {
        self.firewall.remove_all().await
    }

    fn describe(&self) -> Description {
        Description {
            kind: BackendKind::None,
            tool: self.firewall.tool().name().to_string(),
            detail: "nothing leaves the network (IPv4 and IPv6 forwarding from its bridge dropped)"
                .into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::egress::firewall::{tests::runner, Tool};

    pub(crate) fn network(v6: bool) -> NetworkEgress {
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
    async fn drops_everything_forwarded_in_both_families() {
        let fw = Arc::new(Firewall::new(runner("", ""), Tool::Legacy, true));
        let b = NoneBackend::new(fw.clone());
        b.enable(&network(false)).await.unwrap();
        let restores: Vec<String> = fw
            .runner()
            .calls()
            .into_iter()
            .filter_map(|c| c.stdin)
            .collect();
        let want = "\
*filter
:CONDUCTOR-EGRESS-FWD - [0:0]
:CNE-F-cn-web - [0:0]
-I FORWARD 1 -j CONDUCTOR-EGRESS-FWD
-A CNE-F-cn-web -i cn-web ! -o cn-web -j DROP
-A CONDUCTOR-EGRESS-FWD -j CNE-F-cn-web
COMMIT
";
        assert_eq!(restores, vec![want.to_string(), want.to_string()]);
    }

    #[tokio::test]
    async fn bad_networks_are_refused_before_any_command() {
        let fw = Arc::new(Firewall::new(runner("", ""), Tool::Legacy, true));
        let mut n = network(false);
        n.bridge = "has space".into();
        let e = NoneBackend::new(fw.clone()).enable(&n).await.unwrap_err();
        assert!(e.to_string().contains("has space"), "{e}");
        assert!(fw.runner().calls().is_empty());
    }
}
