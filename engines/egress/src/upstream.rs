//! The sandbox's own way out, when it is an HTTP proxy: `HTTPS_PROXY`,
//! `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY` (lower-case spellings win, as in
//! curl), read once from the daemon's environment.
//!
//! Which variable applies to a connection, by what the engine learned of it:
//! plain HTTP -> `http_proxy`, else `all_proxy`; TLS or anything else ->
//! `https_proxy`, else `all_proxy`. The upstream is always asked with
//! CONNECT (an opaque stream cannot be rewritten into proxy requests), except
//! for explicit-proxy clients' absolute-form requests, which are passed to
//! the upstream as they are.
//!
//! `NO_PROXY`: comma- or space-separated entries; `*` matches everything; a
//! domain (`example.com`, `.example.com`, `*.example.com`) matches itself
//! and its subdomains; an IP address matches itself; a CIDR matches the
//! addresses in it; any entry may end in `:PORT` to match only that port.

use std::fmt;
use std::net::IpAddr;

use base64::Engine as _;
use ipnet::IpNet;

use crate::error::ConfigError;

/// What the engine knows about the stream's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Tls,
    Other,
}

/// One upstream proxy: `http://[user:pass@]host[:port]` (port default 80).
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyUrl {
    pub host: String,
    pub port: u16,
    /// `Basic ...` credentials for Proxy-Authorization, if the URL had them.
    pub authorization: Option<String>,
}

impl fmt::Debug for ProxyUrl {
    // Never print credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auth = if self.authorization.is_some() {
            "***@"
        } else {
            ""
        };
        if self.host.contains(':') {
            write!(f, "http://{auth}[{}]:{}", self.host, self.port)
        } else {
            write!(f, "http://{auth}{}:{}", self.host, self.port)
        }
    }
}

impl ProxyUrl {
    /// Parse a proxy URL as found in `HTTPS_PROXY` and friends. `var` names
    /// the variable in errors.
    pub fn parse(var: &str, value: &str) -> Result<ProxyUrl, ConfigError> {
        let bad = |reason: &str| ConfigError {
            var: var.to_string(),
            value: redact(value),
            reason: reason.to_string(),
        };
        let value = value.trim();
        let rest = match value.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) => {
                return Err(bad(&format!(
                    "proxy scheme {scheme:?} is not supported (only http://)"
                )))
            }
            None => value,
        };
        let authority = rest.split('/').next().unwrap_or_default();
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (host, port) = split_host_port(hostport).ok_or_else(|| bad("no host"))?;
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad(&format!("port {p:?} is not a number in 1-65535")))?,
            None => 80,
        };
        if host.is_empty()
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'))
        {
            return Err(bad(&format!("host {host:?} is not a host name or address")));
        }
        let authorization = userinfo.map(|u| {
            let (user, pass) = u.split_once(':').unwrap_or((u, ""));
            let pair = format!("{}:{}", percent_decode(user), percent_decode(pass));
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            )
        });
        Ok(ProxyUrl {
            host: host.to_string(),
            port,
            authorization,
        })
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`, or a bare IPv6 address.
fn split_host_port(s: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after.strip_prefix(':') {
            Some(p) => Some((host, Some(p))),
            None if after.is_empty() => Some((host, None)),
            None => None,
        };
    }
    if s.matches(':').count() > 1 {
        return Some((s, None)); // a bare IPv6 address
    }
    match s.split_once(':') {
        Some((h, p)) => Some((h, Some(p))),
        None => Some((s, None)),
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A proxy URL with its credentials replaced, for error messages.
fn redact(value: &str) -> String {
    match (value.find("://"), value.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &value[..s + 3], &value[at..]),
        (None, Some(at)) => format!("***{}", &value[at..]),
        _ => value.to_string(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum NoProxyHost {
    Any,
    Domain(String),
    Ip(IpAddr),
    Net(IpNet),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct NoProxyEntry {
    host: NoProxyHost,
    port: Option<u16>,
}

/// `NO_PROXY`: destinations that go direct even when a proxy is set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoProxy {
    entries: Vec<NoProxyEntry>,
}

impl NoProxy {
    /// Parse a NO_PROXY value. Entries that are not understood are skipped
    /// (returned, so the caller can log them): a typo must not make the
    /// whole variable void.
    pub fn parse(value: &str) -> (NoProxy, Vec<String>) {
        let mut entries = Vec::new();
        let mut skipped = Vec::new();
        for raw in value.split([',', ' ', '\t']).filter(|e| !e.is_empty()) {
            match parse_no_proxy_entry(raw) {
                Some(e) => entries.push(e),
                None => skipped.push(raw.to_string()),
            }
        }
        (NoProxy { entries }, skipped)
    }

    /// Does a destination (by name and/or address) bypass the proxy?
    pub fn matches(&self, host: Option<&str>, ip: Option<IpAddr>, port: u16) -> bool {
        self.entries.iter().any(|e| {
            if e.port.is_some_and(|p| p != port) {
                return false;
            }
            match &e.host {
                NoProxyHost::Any => true,
                NoProxyHost::Ip(a) => ip.is_some_and(|ip| canonical(ip) == *a),
                NoProxyHost::Net(n) => ip.is_some_and(|ip| n.contains(&canonical(ip))),
                NoProxyHost::Domain(d) => host.is_some_and(|h| {
                    let h = h.trim_end_matches('.').to_ascii_lowercase();
                    h == *d
                        || (h.len() > d.len() && h.ends_with(d.as_str()) && {
                            h.as_bytes()[h.len() - d.len() - 1] == b'.'
                        })
                }),
            }
        })
    }
}

/// IPv4-mapped IPv6 addresses compare as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

fn parse_no_proxy_entry(raw: &str) -> Option<NoProxyEntry> {
    let raw = raw.trim();
    if raw == "*" {
        return Some(NoProxyEntry {
            host: NoProxyHost::Any,
            port: None,
        });
    }
    // A CIDR first: "fd00::/8" would otherwise split at a colon.
    if let Ok(net) = raw.parse::<IpNet>() {
        return Some(NoProxyEntry {
            host: NoProxyHost::Net(net.trunc()),
            port: None,
        });
    }
    if let Ok(ip) = raw.parse::<IpAddr>() {
        return Some(NoProxyEntry {
            host: NoProxyHost::Ip(canonical(ip)),
            port: None,
        });
    }
    let (host, port) = split_host_port(raw)?;
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok()?),
        None => None,
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(NoProxyEntry {
            host: NoProxyHost::Ip(canonical(ip)),
            port,
        });
    }
    let domain = host
        .trim_start_matches("*.")
        .trim_start_matches('.')
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let valid = !domain.is_empty()
        && domain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    valid.then_some(NoProxyEntry {
        host: NoProxyHost::Domain(domain),
        port,
    })
}

/// The upstream proxy configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyEnv {
    pub http: Option<ProxyUrl>,
    pub https: Option<ProxyUrl>,
    pub all: Option<ProxyUrl>,
    pub no_proxy: NoProxy,
}

impl ProxyEnv {
    /// Read the variables from the process environment.
    pub fn from_env() -> Result<ProxyEnv, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Read the variables through `lookup` (for tests and for a daemon that
    /// keeps its own copy of the environment). Empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<ProxyEnv, ConfigError> {
        let get = |name: &str| -> Option<(String, String)> {
            let lower = name.to_ascii_lowercase();
            [lower, name.to_string()]
                .into_iter()
                .find_map(|k| lookup(&k).filter(|v| !v.trim().is_empty()).map(|v| (k, v)))
        };
        let url = |name: &str| -> Result<Option<ProxyUrl>, ConfigError> {
            get(name).map(|(k, v)| ProxyUrl::parse(&k, &v)).transpose()
        };
        let (no_proxy, skipped) = match get("NO_PROXY") {
            Some((_, v)) => NoProxy::parse(&v),
            None => (NoProxy::default(), Vec::new()),
        };
        if !skipped.is_empty() {
            tracing::warn!(?skipped, "NO_PROXY entries not understood, ignored");
        }
        Ok(ProxyEnv {
            http: url("HTTP_PROXY")?,
            https: url("HTTPS_PROXY")?,
            all: url("ALL_PROXY")?,
            no_proxy,
        })
    }

    /// Is any proxy configured at all?
    pub fn is_set(&self) -> bool {
        self.http.is_some() || self.https.is_some() || self.all.is_some()
    }

    /// The proxy a connection goes through, or `None` for direct.
    pub fn route(
        &self,
        protocol: Protocol,
        host: Option<&str>,
        ip: Option<IpAddr>,
        port: u16,
    ) -> Option<&ProxyUrl> {
        let proxy = match protocol {
            Protocol::Http => self.http.as_ref().or(self.all.as_ref()),
            Protocol::Tls | Protocol::Other => self.https.as_ref().or(self.all.as_ref()),
        }?;
        if self.no_proxy.matches(host, ip, port) {
            return None;
        }
        Some(proxy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<ProxyEnv, ConfigError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ProxyEnv::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn proxy_urls_parse() {
        let p = ProxyUrl::parse("HTTPS_PROXY", "http://proxy.corp:3128/").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("proxy.corp", 3128));
        assert!(p.authorization.is_none());
        let p = ProxyUrl::parse("x", "proxy.corp").unwrap();
        assert_eq!(p.port, 80);
        let p = ProxyUrl::parse("x", "http://[2001:db8::1]:8080").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("2001:db8::1", 8080));
        assert_eq!(p.to_string(), "http://[2001:db8::1]:8080");
        let p = ProxyUrl::parse("x", "http://us%40er:p%3Ass@10.0.0.1:3128").unwrap();
        // base64("us@er:p:ss")
        assert_eq!(p.authorization.as_deref(), Some("Basic dXNAZXI6cDpzcw=="));
        assert_eq!(p.to_string(), "http://***@10.0.0.1:3128");
        assert!(!format!("{p:?}").contains("p:ss"));
    }

    #[test]
    fn bad_proxy_urls_name_the_variable_and_value() {
        for (value, needle) in [
            ("https://proxy:443", "scheme"),
            ("socks5://proxy:1080", "scheme"),
            ("http://proxy:99999", "port"),
            ("http://proxy:0", "port"),
            ("http://", "host"),
            ("http://pro xy:80", "host"),
        ] {
            let e = ProxyUrl::parse("HTTPS_PROXY", value)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("HTTPS_PROXY") && e.contains(needle),
                "{value}: {e}"
            );
        }
        let e = ProxyUrl::parse("HTTPS_PROXY", "ftp://user:secret@p:1")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("secret"), "{e}");
    }

    #[test]
    fn lower_case_wins_and_empty_is_unset() {
        let e = env(&[
            ("HTTPS_PROXY", "http://upper:1"),
            ("https_proxy", "http://lower:2"),
            ("HTTP_PROXY", ""),
        ])
        .unwrap();
        assert_eq!(e.https.unwrap().host, "lower");
        assert!(e.http.is_none());
        assert!(env(&[]).unwrap() == ProxyEnv::default());
    }

    #[test]
    fn routes_by_protocol_with_all_proxy_fallback() {
        let e = env(&[("HTTP_PROXY", "http://h:1"), ("ALL_PROXY", "http://a:3")]).unwrap();
        let ip = Some("192.0.2.7".parse().unwrap());
        assert_eq!(e.route(Protocol::Http, None, ip, 80).unwrap().host, "h");
        assert_eq!(e.route(Protocol::Tls, None, ip, 443).unwrap().host, "a");
        assert_eq!(e.route(Protocol::Other, None, ip, 22).unwrap().host, "a");
        let e = env(&[("HTTPS_PROXY", "http://s:2")]).unwrap();
        assert!(e.route(Protocol::Http, None, ip, 80).is_none());
        assert_eq!(e.route(Protocol::Tls, None, ip, 443).unwrap().host, "s");
    }

    #[test]
    fn no_proxy_semantics() {
        let (np, skipped) = NoProxy::parse(
            "localhost, .internal.corp,*.svc, example.com:8443,10.0.0.0/8,192.0.2.5, ::1, [2001:db8::7]:443, fd00::/8, bad/entry",
        );
        assert_eq!(skipped, vec!["bad/entry".to_string()]);
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert!(np.matches(Some("localhost"), None, 80));
        assert!(np.matches(Some("a.internal.corp"), None, 80));
        assert!(np.matches(Some("internal.corp"), None, 80));
        assert!(!np.matches(Some("notinternal.corp"), None, 80));
        assert!(np.matches(Some("api.svc"), None, 80));
        assert!(np.matches(Some("EXAMPLE.com."), None, 8443));
        assert!(!np.matches(Some("example.com"), None, 443));
        assert!(np.matches(None, ip("10.1.2.3"), 80));
        assert!(np.matches(None, ip("::ffff:10.1.2.3"), 80));
        assert!(np.matches(None, ip("192.0.2.5"), 1));
        assert!(!np.matches(None, ip("192.0.2.6"), 1));
        assert!(np.matches(None, ip("::1"), 1));
        assert!(np.matches(None, ip("2001:db8::7"), 443));
        assert!(!np.matches(None, ip("2001:db8::7"), 80));
        assert!(np.matches(None, ip("fd12::1"), 80));
        assert!(!np.matches(Some("example.org"), ip("198.51.100.1"), 80));
        let (all, _) = NoProxy::parse("*");
        assert!(all.matches(Some("anything"), None, 1));
    }

    #[test]
    fn no_proxy_bypasses_the_route() {
        let e = env(&[("https_proxy", "http://s:2"), ("no_proxy", "192.0.2.0/24")]).unwrap();
        let ip = Some("192.0.2.9".parse().unwrap());
        assert!(e.route(Protocol::Tls, Some("x.test"), ip, 443).is_none());
        let other = Some("198.51.100.9".parse().unwrap());
        assert!(e.route(Protocol::Tls, Some("x.test"), other, 443).is_some());
    }
}
