//! What a published port is: `[HOST_ADDR:]HOST_PORT:PORT[/tcp|/udp]` and
//! what it forwards to. Plain data and parsing, no I/O.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// What a port forwards to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum PortTarget {
    /// A Docker container, by name (followed across restarts).
    Container(String),
    /// The endpoint attached with `--netns NAME`.
    Netns(String),
    /// An endpoint by id.
    Endpoint(String),
}

impl PortTarget {
    /// The name the `*.localhost` proxy routes by.
    pub fn name(&self) -> &str {
        match self {
            PortTarget::Container(n) | PortTarget::Netns(n) | PortTarget::Endpoint(n) => n,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            PortTarget::Container(n) => format!("container {n}"),
            PortTarget::Netns(n) => format!("netns {n}"),
            PortTarget::Endpoint(n) => format!("endpoint {n}"),
        }
    }
}

/// The listening side of a published port; also its identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HostSide {
    pub host: SocketAddr,
    pub proto: Proto,
}

impl HostSide {
    /// `127.0.0.1:8080/tcp`, `[::1]:8080/udp`: the id `port rm` takes.
    pub fn id(&self) -> String {
        format!("{}/{}", self.host, self.proto)
    }

    /// `[HOST_ADDR:]HOST_PORT[/proto]` (what `port rm` takes).
    pub fn parse(text: &str) -> Result<HostSide> {
        let (rest, proto) = split_proto(text)?;
        let (addr, port) = split_host(rest, text)?;
        Ok(HostSide {
            host: SocketAddr::new(addr, parse_port(port, text)?),
            proto,
        })
    }
}

/// A published port as stored and listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortSpec {
    pub host: SocketAddr,
    pub proto: Proto,
    pub target: PortTarget,
    /// The port on the target.
    pub port: u16,
}

impl PortSpec {
    pub fn side(&self) -> HostSide {
        HostSide {
            host: self.host,
            proto: self.proto,
        }
    }

    /// `[HOST_ADDR:]HOST_PORT:PORT[/tcp|/udp]`; IPv6 host addresses in
    /// brackets (`[::1]:8080:80`).
    pub fn parse(text: &str, target: PortTarget) -> Result<PortSpec> {
        let (rest, proto) = split_proto(text)?;
        let (front, port) = rest.rsplit_once(':').ok_or_else(|| {
            Error::invalid(
                "port mapping",
                text,
                "expected [HOST_ADDR:]HOST_PORT:PORT[/tcp|/udp]",
            )
        })?;
        let (addr, host_port) = split_host(front, text)?;
        Ok(PortSpec {
            host: SocketAddr::new(addr, parse_port(host_port, text)?),
            proto,
            target,
            port: parse_port(port, text)?,
        })
    }
}

fn split_proto(text: &str) -> Result<(&str, Proto)> {
    match text.rsplit_once('/') {
        None => Ok((text, Proto::Tcp)),
        Some((rest, "tcp")) => Ok((rest, Proto::Tcp)),
        Some((rest, "udp")) => Ok((rest, Proto::Udp)),
        Some((_, other)) => Err(Error::invalid(
            "port protocol",
            other,
            "expected tcp or udp",
        )),
    }
}

/// `HOST_PORT`, `ADDR:HOST_PORT` or `[V6]:HOST_PORT`.
fn split_host<'a>(front: &'a str, whole: &str) -> Result<(IpAddr, &'a str)> {
    let default = IpAddr::V4(Ipv4Addr::LOCALHOST);
    if let Some(rest) = front.strip_prefix('[') {
        let (v6, port) = rest.split_once("]:").ok_or_else(|| {
            Error::invalid("port mapping", whole, "expected [IPV6]:HOST_PORT:PORT")
        })?;
        let addr = v6
            .parse::<std::net::Ipv6Addr>()
            .map_err(|_| Error::invalid("host address", v6, "not an IPv6 address"))?;
        return Ok((IpAddr::V6(addr), port));
    }
    match front.rsplit_once(':') {
        None => Ok((default, front)),
        Some((addr, port)) => {
            let addr = addr.parse::<IpAddr>().map_err(|_| {
                Error::invalid("host address", addr, "not an IP address (IPv6 in brackets)")
            })?;
            Ok((addr, port))
        }
    }
}

fn parse_port(text: &str, whole: &str) -> Result<u16> {
    match text.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
        Ok(p) => Err(Error::invalid(
            "port",
            p,
            format!("must be 1-65535 (in {whole:?})"),
        )),
        Err(_) => Err(Error::invalid(
            "port",
            text,
            format!("not a number (in {whole:?})"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c() -> PortTarget {
        PortTarget::Container("web".into())
    }

    #[test]
    fn mappings_parse_with_defaults() {
        let p = PortSpec::parse("8080:80", c()).unwrap();
        assert_eq!(p.host, "127.0.0.1:8080".parse().unwrap());
        assert_eq!((p.port, p.proto), (80, Proto::Tcp));
        let p = PortSpec::parse("0.0.0.0:53:5353/udp", c()).unwrap();
        assert_eq!(p.host, "0.0.0.0:53".parse().unwrap());
        assert_eq!((p.port, p.proto), (5353, Proto::Udp));
        let p = PortSpec::parse("[::1]:8080:80/tcp", c()).unwrap();
        assert_eq!(p.host, "[::1]:8080".parse().unwrap());
        assert_eq!(p.side().id(), "[::1]:8080/tcp");
        assert_eq!(HostSide::parse("[::1]:8080").unwrap(), p.side());
        assert_eq!(
            HostSide::parse("8080/udp").unwrap().id(),
            "127.0.0.1:8080/udp"
        );
    }

    #[test]
    fn bad_mappings_name_the_value() {
        for (text, needle) in [
            ("0:80", "\"0\""),
            ("8080:70000", "70000"),
            ("8080", "HOST_PORT:PORT"),
            ("8080:80/sctp", "sctp"),
            ("nope:8080:80", "nope"),
            ("8080:x", "\"x\""),
            ("[::1:8080:80", "IPV6"),
        ] {
            let e = PortSpec::parse(text, c()).unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}
