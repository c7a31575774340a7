//! Networks, endpoints and the API's request/response shapes, with the
//! validation of names. Everything here is plain data: no I/O.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Longest network name accepted.
pub const MAX_NETWORK_NAME: usize = 64;
/// Prefix of bridges made by conductor-netd.
pub const BRIDGE_PREFIX: &str = "cn-";
/// Longest interface name (IFNAMSIZ - 1).
pub const MAX_IFNAME: usize = 15;

/// Network names: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most 64 bytes.
pub fn validate_network_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        "must not be empty".to_string()
    } else if name.len() > MAX_NETWORK_NAME {
        format!("{} bytes, longer than {MAX_NETWORK_NAME}", name.len())
    } else if !name.as_bytes()[0].is_ascii_alphanumeric() {
        "must start with a letter or a digit".to_string()
    } else if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        format!("contains {c:?}; allowed are [a-zA-Z0-9_.-]")
    } else {
        return Ok(());
    };
    Err(Error::invalid("network name", name, reason))
}

/// Interface names the kernel accepts, checked before anything is sent.
pub fn validate_ifname(what: &'static str, name: &str) -> Result<()> {
    netns::validate_ifname(name).map_err(|e| {
        let reason = match &e {
            netns::Error::InvalidInput { reason, .. } => reason.clone(),
            other => other.to_string(),
        };
        Error::invalid(what, name, reason)
    })
}

/// FNV-1a, for short stable name suffixes.
fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// The bridge of a network: `cn-NAME` when that fits in 15 bytes, else
/// `cn-` + the first 6 bytes + `-` + 5 hex digits of a hash of the name.
pub fn bridge_name(network: &str) -> String {
    let plain = format!("{BRIDGE_PREFIX}{network}");
    if plain.len() <= MAX_IFNAME {
        return plain;
    }
    let head: String = network.chars().take(6).collect();
    format!(
        "{BRIDGE_PREFIX}{head}-{:05x}",
        fnv1a(network.as_bytes()) & 0xfffff
    )
}

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
                if n.is_empty() || n.contains('/') || n == "." || n == ".." {
                    return Err(Error::invalid("netns name", &n, "not a namespace name"));
                }
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
}

impl Network {
    /// The gateway with the subnet's prefix, as it is put on the bridge.
    pub fn gateway_net(&self) -> Ipv4Net {
        Ipv4Net::new(self.gateway, self.subnet.prefix_len()).expect("prefix from a valid subnet")
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

// ---- CNI-style result -------------------------------------------------------

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

// ---- API requests and views ------------------------------------------------

/// `POST /v1/networks`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateNetwork {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_subnet: Option<String>,
    /// Bridge name; derived from the network name when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
}

/// `POST /v1/networks/{name}/endpoints`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns_path: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// Interface name inside the namespace (default eth0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    /// Requested IPv4 address (default: the next free one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Add a default route via the gateway (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_route: Option<bool>,
}

impl AttachRequest {
    pub fn target(&self) -> Result<Target> {
        Target::from_parts(self.netns.clone(), self.netns_path.clone(), self.pid)
    }
}

/// `POST /v1/networks/{name}/detach`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetachRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns_path: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// Wait until the veth is deleted (default true). With false the answer
    /// comes once the detach is recorded; the deletion (an RCU grace period,
    /// ~20 ms) runs in the background, the address stays reserved until it
    /// is done, and a new attach of the same namespace waits for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<bool>,
}

impl DetachRequest {
    pub fn target(&self) -> Result<Target> {
        Target::from_parts(self.netns.clone(), self.netns_path.clone(), self.pid)
    }
}

/// A network with its endpoint count, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkView {
    #[serde(flatten)]
    pub network: Network,
    pub endpoints: usize,
}

/// An endpoint with its state and CNI-style result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointView {
    #[serde(flatten)]
    pub endpoint: Endpoint,
    pub state: EndpointState,
    pub result: CniResult,
}

/// Answer to an attach: `created` is false when the endpoint already existed
/// (an idempotent repeat).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachResponse {
    pub created: bool,
    pub endpoint: EndpointView,
}

/// Answer to a detach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetachResponse {
    /// False when there was nothing to detach.
    pub detached: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// True when the deletion is still running in the background.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pending: bool,
}

/// Answer to a network removal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveResponse {
    pub removed: String,
    pub detached: usize,
}

/// `GET /v1/status`: the daemon and a tree network -> bridge -> endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub pid: u32,
    pub uptime_secs: u64,
    pub state_dir: String,
    pub socket: String,
    pub environment: String,
    pub networks: Vec<StatusNetwork>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusNetwork {
    pub name: String,
    pub bridge: String,
    pub subnet: String,
    pub gateway: String,
    pub endpoints: Vec<StatusEndpoint>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusEndpoint {
    pub id: String,
    pub target: String,
    pub ifname: String,
    pub address: String,
    pub state: EndpointState,
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
    fn network_names() {
        for ok in ["a", "net-1", "A.b_c-9", "0"] {
            validate_network_name(ok).unwrap();
        }
        for bad in ["", "-a", ".a", "a b", "a/b", "é", &"x".repeat(65)] {
            let e = validate_network_name(bad).unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn bridge_names_fit_and_differ() {
        assert_eq!(bridge_name("web"), "cn-web");
        assert_eq!(bridge_name("twelve-bytes"), "cn-twelve-bytes");
        let a = bridge_name("a-rather-long-network-name");
        let b = bridge_name("a-rather-long-network-other");
        assert!(a.len() <= 15 && b.len() <= 15, "{a} {b}");
        assert_ne!(a, b);
        assert!(a.starts_with("cn-a-rath-"));
        netns::validate_ifname(&a).unwrap();
        let long = "x".repeat(64);
        assert!(bridge_name(&long).len() <= 15);
    }

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
    fn attach_request_refuses_unknown_fields() {
        let e = serde_json::from_str::<AttachRequest>(r#"{"netns":"a","colour":1}"#).unwrap_err();
        assert!(e.to_string().contains("colour"));
    }

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
