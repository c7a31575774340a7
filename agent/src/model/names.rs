//! Name rules, in one place: networks, interfaces, named namespaces, and
//! the bridge name derived from a network name.

use crate::error::{Error, Result};

/// Longest network name accepted.
pub const MAX_NETWORK_NAME: usize = 64;
/// Prefix of bridges made by conductor-netd.
pub const BRIDGE_PREFIX: &str = "cn-";
/// Longest interface name (IFNAMSIZ - 1).
pub const MAX_IFNAME: usize = netns::MAX_IFNAME_LEN;

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
    netns::validate_ifname(name).map_err(|e| Error::invalid(what, name, reason_of(e)))
}

/// Names of named namespaces (under /run/netns), as iproute2 takes them.
pub fn validate_netns_name(name: &str) -> Result<()> {
    netns::validate_netns_name(name).map_err(|e| Error::invalid("netns name", name, reason_of(e)))
}

/// MTUs of bridges and endpoints.
pub fn validate_mtu(mtu: u32) -> Result<()> {
    netns::validate_mtu(mtu).map_err(|e| Error::invalid("mtu", mtu, reason_of(e)))
}

/// The reason alone of a netns input error (the caller names the value).
fn reason_of(e: netns::Error) -> String {
    match e {
        netns::Error::InvalidInput { reason, .. } => reason,
        other => other.to_string(),
    }
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

/// The MAC a bridge of this daemon gets when it creates it: 0a:58:ff, the
/// instance tag, a byte of a hash of the bridge's name. It marks the bridge
/// as this daemon's (a bridge whose record is lost can be adopted only with
/// it) and pins the gateway's MAC (a Linux bridge without one takes its
/// lowest port's). Endpoint MACs are 0a:58 + an IPv4 address, and 255.x is
/// refused by IPAM, so the two never meet.
pub fn bridge_mac(tag: &str, bridge: &str) -> [u8; 6] {
    let t = u16::from_str_radix(tag, 16).unwrap_or(0).to_be_bytes();
    [0x0a, 0x58, 0xff, t[0], t[1], fnv1a(bridge.as_bytes()) as u8]
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
    fn bridge_macs_carry_the_tag_and_never_look_like_an_endpoint() {
        let mac = bridge_mac("1ab9", "cn-web");
        assert_eq!(mac[..5], [0x0a, 0x58, 0xff, 0x1a, 0xb9]);
        assert_eq!(mac, bridge_mac("1ab9", "cn-web"));
        assert_ne!(mac[..5], bridge_mac("1aba", "cn-web")[..5]);
        // Endpoint MACs are 0a:58:<IPv4>, and 255.0.0.0/8 is refused.
        assert!(crate::ipam::parse_subnet_v4("255.0.0.0/8").is_err());
    }

    #[test]
    fn netns_names_and_mtus_follow_the_kernel_rules() {
        validate_netns_name("c1").unwrap();
        for bad in ["", "a/b", ".", "a b"] {
            let e = validate_netns_name(bad).unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
        validate_mtu(1500).unwrap();
        assert!(validate_mtu(67).unwrap_err().to_string().contains("67"));
    }
}
