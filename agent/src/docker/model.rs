//! Docker's networks and containers as netd needs them, read from bollard's
//! inspect answers (the same for API 1.41 and 1.51: fields newer daemons add
//! are optional).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use bollard::models::{ContainerInspectResponse, NetworkInspect};
use ipnet::{Ipv4Net, Ipv6Net};

use super::client::bridge_of;

/// A Docker network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerNetwork {
    pub id: String,
    pub name: String,
    pub driver: String,
    /// The bridge in the daemon's namespace (bridge driver only).
    pub bridge: Option<String>,
    pub subnet4: Option<Ipv4Net>,
    pub gateway4: Option<Ipv4Addr>,
    pub subnet6: Option<Ipv6Net>,
    pub gateway6: Option<Ipv6Addr>,
    /// `--internal`: nothing leaves it.
    pub internal: bool,
    /// Docker's default bridge: no names there (Docker serves none either;
    /// its containers use the host's resolvers).
    pub default_bridge: bool,
}

impl DockerNetwork {
    pub fn from_inspect(n: &NetworkInspect) -> Option<DockerNetwork> {
        let id = n.id.clone()?;
        let driver = n.driver.clone().unwrap_or_default();
        let mut net = DockerNetwork {
            bridge: (driver == "bridge").then(|| bridge_of(&id, n.options.as_ref())),
            name: n.name.clone().unwrap_or_default(),
            id,
            driver,
            subnet4: None,
            gateway4: None,
            subnet6: None,
            gateway6: None,
            internal: n.internal.unwrap_or(false),
            default_bridge: false,
        };
        net.default_bridge = n
            .options
            .as_ref()
            .and_then(|o| o.get("com.docker.network.bridge.default_bridge"))
            .is_some_and(|v| v == "true")
            || (net.name == "bridge" && net.driver == "bridge");
        for config in n
            .ipam
            .as_ref()
            .and_then(|i| i.config.as_ref())
            .into_iter()
            .flatten()
        {
            let subnet = config
                .subnet
                .as_deref()
                .and_then(|s| s.parse::<ipnet::IpNet>().ok());
            let gateway = config
                .gateway
                .as_deref()
                .and_then(|g| g.parse::<std::net::IpAddr>().ok());
            match subnet {
                Some(ipnet::IpNet::V4(s)) if net.subnet4.is_none() => {
                    net.subnet4 = Some(s);
                    net.gateway4 = match gateway {
                        Some(std::net::IpAddr::V4(g)) => Some(g),
                        // Docker's default: the subnet's first host.
                        _ => s.hosts().next(),
                    };
                }
                Some(ipnet::IpNet::V6(s)) if net.subnet6.is_none() => {
                    net.subnet6 = Some(s);
                    net.gateway6 = match gateway {
                        Some(std::net::IpAddr::V6(g)) => Some(g),
                        // The subnet's ::1 (its hosts() starts at the
                        // network address itself).
                        _ => Some(Ipv6Addr::from(u128::from(s.network()) + 1)),
                    };
                }
                _ => {}
            }
        }
        Some(net)
    }
}

/// A container's place on one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerEndpoint {
    pub network_id: String,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    /// Names on this network besides the container's own: aliases,
    /// Compose service names, the short id (Docker puts them here).
    pub aliases: Vec<String>,
}

/// A container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerContainer {
    pub id: String,
    /// Without Docker's leading '/'.
    pub name: String,
    pub running: bool,
    pub pid: Option<i64>,
    /// Its network namespace file (`SandboxKey`); shared by the containers
    /// of `--network=container:` with their parent.
    pub sandbox: Option<PathBuf>,
    /// By network id.
    pub endpoints: BTreeMap<String, DockerEndpoint>,
    pub labels: BTreeMap<String, String>,
    /// TCP ports the image or `--expose` declares (`8080/tcp` -> 8080).
    pub exposed_tcp: Vec<u16>,
    /// `--network=container:X`: the container whose network namespace it
    /// shares, as Docker recorded it (an id, or the name it was given).
    pub shares_network_of: Option<String>,
}

impl DockerContainer {
    pub fn from_inspect(c: &ContainerInspectResponse) -> Option<DockerContainer> {
        let id = c.id.clone()?;
        let name = c
            .name
            .clone()
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string();
        let state = c.state.as_ref();
        let settings = c.network_settings.as_ref();
        let mut endpoints = BTreeMap::new();
        for (_, ep) in settings
            .and_then(|s| s.networks.as_ref())
            .into_iter()
            .flatten()
        {
            let Some(network_id) = ep.network_id.clone().filter(|n| !n.is_empty()) else {
                continue;
            };
            let mut aliases: Vec<String> = ep.aliases.clone().unwrap_or_default();
            for n in ep.dns_names.clone().unwrap_or_default() {
                if !aliases.contains(&n) {
                    aliases.push(n);
                }
            }
            aliases.retain(|a| a != &name && !a.is_empty());
            endpoints.insert(
                network_id.clone(),
                DockerEndpoint {
                    network_id,
                    ipv4: ep.ip_address.as_deref().and_then(|a| a.parse().ok()),
                    ipv6: ep
                        .global_ipv6_address
                        .as_deref()
                        .and_then(|a| a.parse().ok()),
                    aliases,
                },
            );
        }
        Some(DockerContainer {
            id,
            name,
            running: state.and_then(|s| s.running).unwrap_or(false),
            pid: state.and_then(|s| s.pid).filter(|p| *p > 0),
            sandbox: settings
                .and_then(|s| s.sandbox_key.clone())
                .filter(|k| !k.is_empty())
                .map(PathBuf::from),
            endpoints,
            labels: c
                .config
                .as_ref()
                .and_then(|c| c.labels.clone())
                .map(|l| l.into_iter().collect())
                .unwrap_or_default(),
            exposed_tcp: c
                .config
                .as_ref()
                .and_then(|c| c.exposed_ports.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|p| p.strip_suffix("/tcp").and_then(|n| n.parse().ok()))
                .collect(),
            shares_network_of: c
                .host_config
                .as_ref()
                .and_then(|h| h.network_mode.as_deref())
                .and_then(|m| m.strip_prefix("container:"))
                .filter(|parent| !parent.is_empty())
                .map(str::to_string),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_and_containers_parse_from_api_json() {
        let net: NetworkInspect = serde_json::from_value(serde_json::json!({
            "Name": "net1", "Id": "0123456789abcdef0123", "Driver": "bridge",
            "IPAM": {"Config": [{"Subnet": "172.18.0.0/16", "Gateway": "172.18.0.1"},
                                 {"Subnet": "fd00:1::/64"}]},
            "Internal": false, "Options": {}
        }))
        .unwrap();
        let n = DockerNetwork::from_inspect(&net).unwrap();
        assert_eq!(n.bridge.as_deref(), Some("br-0123456789ab"));
        assert_eq!(n.subnet4, Some("172.18.0.0/16".parse().unwrap()));
        assert_eq!(n.gateway4, Some("172.18.0.1".parse().unwrap()));
        assert_eq!(n.gateway6, Some("fd00:1::1".parse().unwrap()));
        assert!(!n.default_bridge);

        let c: ContainerInspectResponse = serde_json::from_value(serde_json::json!({
            "Id": "c0ffee", "Name": "/web",
            "State": {"Running": true, "Pid": 42},
            "Config": {"Labels": {"com.docker.compose.service": "web"},
                       "ExposedPorts": {"8080/tcp": {}, "53/udp": {}}},
            "NetworkSettings": {"SandboxKey": "/run/docker/netns/abc", "Networks": {
                "net1": {"NetworkID": "0123456789abcdef0123", "IPAddress": "172.18.0.2",
                         "Aliases": ["www", "web"], "DNSNames": ["web", "c0ffee", "www"]}}}
        }))
        .unwrap();
        let c = DockerContainer::from_inspect(&c).unwrap();
        assert_eq!(c.name, "web");
        assert_eq!(c.pid, Some(42));
        assert_eq!(c.exposed_tcp, [8080]);
        assert_eq!(c.sandbox, Some(PathBuf::from("/run/docker/netns/abc")));
        let ep = &c.endpoints["0123456789abcdef0123"];
        assert_eq!(ep.ipv4, Some("172.18.0.2".parse().unwrap()));
        assert_eq!(ep.aliases, ["www", "c0ffee"]);
        assert_eq!(c.shares_network_of, None);

        let worker: ContainerInspectResponse = serde_json::from_value(serde_json::json!({
            "Id": "beef", "Name": "/w1", "State": {"Running": true, "Pid": 43},
            "HostConfig": {"NetworkMode": "container:c0ffee"},
            "NetworkSettings": {"SandboxKey": "", "Networks": {}}
        }))
        .unwrap();
        let worker = DockerContainer::from_inspect(&worker).unwrap();
        assert_eq!(worker.shares_network_of.as_deref(), Some("c0ffee"));
        assert!(worker.endpoints.is_empty());
    }
}
