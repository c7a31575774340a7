//! resolv.conf, as far as a forwarder cares: the nameservers (telling
//! loopback ones apart) and the search list. Parsed with the `resolv-conf`
//! crate.
//!
//! Loopback nameservers (127.0.0.53 of systemd-resolved, a local dnsmasq)
//! are useless from inside a container's namespace - its loopback is its
//! own - but fine for the engine's forwarding sockets, which live in the
//! daemon's namespace. Docker makes the same distinction (`HostLoopback`).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use crate::error::{Error, Result};

const DNS_PORT: u16 = 53;

/// One `nameserver` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nameserver {
    /// The address.
    pub addr: IpAddr,
    /// The IPv6 zone (`fe80::1%eth0`), if any.
    pub zone: Option<String>,
}

impl Nameserver {
    /// Whether the address only means something in the namespace that
    /// reads the file (127/8, ::1, 0.0.0.0, ::, and v4-mapped loopback).
    pub fn is_loopback(&self) -> bool {
        let addr = self.addr.to_canonical();
        addr.is_loopback() || addr.is_unspecified()
    }

    /// Where to send queries (port 53).
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.addr, DNS_PORT)
    }
}

/// The parts of resolv.conf the daemon uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvConf {
    /// Nameservers in file order.
    pub nameservers: Vec<Nameserver>,
    /// The search list (or the `domain` line).
    pub search: Vec<String>,
    /// `options ndots:N` (default 1).
    pub ndots: u32,
}

impl ResolvConf {
    /// Parses strictly: the first line glibc would ignore is an error
    /// naming the line and its text.
    pub fn parse(text: &str) -> Result<Self> {
        let (conf, mut errors) = Self::parse_lenient(text);
        match errors.is_empty() {
            true => Ok(conf),
            false => Err(errors.swap_remove(0)),
        }
    }

    /// Parses as glibc does, skipping lines it does not understand; those
    /// come back as errors for the caller to log.
    pub fn parse_lenient(text: &str) -> (Self, Vec<Error>) {
        let (config, errors) = resolv_conf::Config::parse_with_errors(text.as_bytes());
        let lines: Vec<&str> = text.lines().collect();
        let errors = errors
            .into_iter()
            .map(|e| {
                // The crate counts lines from 0.
                let index = line_of(&e);
                let content = lines.get(index).map_or("", |l| l.trim());
                Error::ParseResolvConf {
                    line: index + 1,
                    reason: format!("{content:?}: {e}"),
                }
            })
            .collect();
        let nameservers = config
            .nameservers
            .iter()
            .map(|ns| match ns {
                resolv_conf::ScopedIp::V4(a) => Nameserver {
                    addr: IpAddr::V4(*a),
                    zone: None,
                },
                resolv_conf::ScopedIp::V6(a, zone) => Nameserver {
                    addr: IpAddr::V6(*a),
                    zone: zone.clone(),
                },
            })
            .collect();
        let search = config
            .get_last_search_or_domain()
            .map(|s| s.to_string())
            .collect();
        let conf = Self {
            nameservers,
            search,
            ndots: config.ndots,
        };
        (conf, errors)
    }

    /// Reads and parses (leniently) a file; unreadable is an error.
    pub fn read(path: &Path) -> Result<(Self, Vec<Error>)> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ReadResolvConf {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self::parse_lenient(&text))
    }

    /// Upstreams for the engine's forwarder (daemon namespace: loopback
    /// ones included).
    pub fn upstreams(&self) -> Vec<SocketAddr> {
        self.nameservers
            .iter()
            .map(Nameserver::socket_addr)
            .collect()
    }

    /// Nameservers a container could use directly (not loopback).
    pub fn container_usable(&self) -> Vec<Nameserver> {
        self.nameservers
            .iter()
            .filter(|ns| !ns.is_loopback())
            .cloned()
            .collect()
    }
}

fn line_of(error: &resolv_conf::ParseError) -> usize {
    use resolv_conf::ParseError::*;
    match error {
        InvalidUtf8(line, _) | InvalidIp(line, _) => *line,
        InvalidValue(line)
        | InvalidOptionValue(line)
        | InvalidOption(line)
        | InvalidDirective(line)
        | ExtraData(line) => *line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYSTEMD: &str =
        "# managed\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch corp.example\n";

    #[test]
    fn loopback_nameservers_are_told_apart() {
        let text = "nameserver 127.0.0.53\nnameserver 10.0.0.2\nnameserver ::1\nnameserver fe80::1%eth0\nnameserver ::ffff:127.0.0.1\n";
        let conf = ResolvConf::parse(text).unwrap();
        let loopback: Vec<bool> = conf
            .nameservers
            .iter()
            .map(Nameserver::is_loopback)
            .collect();
        assert_eq!(loopback, [true, false, true, false, true]);
        assert_eq!(conf.nameservers[3].zone.as_deref(), Some("eth0"));
        let usable: Vec<IpAddr> = conf.container_usable().iter().map(|n| n.addr).collect();
        assert_eq!(
            usable,
            [
                "10.0.0.2".parse::<IpAddr>().unwrap(),
                "fe80::1".parse().unwrap()
            ]
        );
        assert_eq!(conf.upstreams()[0], "127.0.0.53:53".parse().unwrap());
    }

    #[test]
    fn search_and_ndots() {
        let conf = ResolvConf::parse(SYSTEMD).unwrap();
        assert_eq!(conf.search, ["corp.example"]);
        assert_eq!(conf.ndots, 1);
        let conf = ResolvConf::parse("domain a.example\noptions ndots:3\n").unwrap();
        assert_eq!(conf.search, ["a.example"]);
        assert_eq!(conf.ndots, 3);
    }

    #[test]
    fn bad_lines_name_the_line_and_text() {
        let text = "nameserver 10.0.0.2\nnameserver not-an-ip\nnameserver 10.0.0.3\n";
        let err = ResolvConf::parse(text).unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("not-an-ip"), "{err}");
        let (conf, errors) = ResolvConf::parse_lenient(text);
        assert_eq!(errors.len(), 1);
        assert_eq!(conf.nameservers.len(), 2);
    }

    #[test]
    fn reading_a_missing_file_names_it() {
        let err = ResolvConf::read(Path::new("/nonexistent/resolv.conf")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/resolv.conf"));
    }
}
