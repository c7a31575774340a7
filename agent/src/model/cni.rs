//! The CNI-style result of an endpoint (what CNI's bridge plugin would
//! answer for the same interface), as the API and `attach --json` show it.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::stored::{Endpoint, Network};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniResult {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub interfaces: Vec<CniInterface>,
    pub ips: Vec<CniIp>,
    pub routes: Vec<CniRoute>,
    pub dns: CniDns,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniInterface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniIp {
    pub address: String,
    pub gateway: IpAddr,
    pub interface: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniRoute {
    pub dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniDns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
}

impl Endpoint {
    /// The CNI-style result of this endpoint on `network`.
    pub fn cni_result(&self, network: &Network) -> CniResult {
        let mut ips = vec![CniIp {
            address: self.ipv4.to_string(),
            gateway: IpAddr::V4(network.gateway),
            interface: 1,
        }];
        let mut routes = Vec::new();
        if self.default_route {
            routes.push(CniRoute {
                dst: "0.0.0.0/0".into(),
                gw: Some(IpAddr::V4(network.gateway)),
            });
        }
        if let (Some(v6), Some(gw6)) = (self.ipv6, network.ipv6_gateway) {
            ips.push(CniIp {
                address: v6.to_string(),
                gateway: IpAddr::V6(gw6),
                interface: 1,
            });
            if self.default_route {
                routes.push(CniRoute {
                    dst: "::/0".into(),
                    gw: Some(IpAddr::V6(gw6)),
                });
            }
        }
        CniResult {
            cni_version: "1.0.0".into(),
            interfaces: vec![
                CniInterface {
                    name: self.host_ifname.clone(),
                    mac: None,
                    sandbox: None,
                },
                CniInterface {
                    name: self.ifname.clone(),
                    mac: Some(self.mac.clone()),
                    sandbox: Some(self.target.sandbox_path()),
                },
            ],
            ips,
            routes,
            dns: CniDns::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{format_mac, mac_for, NsId, Target};

    #[test]
    fn cni_result_shape() {
        let net = Network {
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
        let ep = Endpoint {
            id: "cnab1".into(),
            network: "n".into(),
            target: Target::Netns("c1".into()),
            netns_id: NsId { dev: 1, ino: 2 },
            ifname: "eth0".into(),
            host_ifname: "cnab1".into(),
            mac: format_mac(&mac_for("10.89.0.2".parse().unwrap())),
            ipv4: "10.89.0.2/24".parse().unwrap(),
            ipv6: None,
            default_route: true,
            created: 0,
            detaching: false,
        };
        let v = serde_json::to_value(ep.cni_result(&net)).unwrap();
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["interfaces"][1]["sandbox"], "/run/netns/c1");
        assert_eq!(v["interfaces"][1]["mac"], "0a:58:0a:59:00:02");
        assert_eq!(v["ips"][0]["address"], "10.89.0.2/24");
        assert_eq!(v["ips"][0]["gateway"], "10.89.0.1");
        assert_eq!(v["routes"][0]["dst"], "0.0.0.0/0");
    }
}
