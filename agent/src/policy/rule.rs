//! One rule, as written and as parsed: `allow|deny TARGET`, where TARGET is
//! a domain (`example.com`, `*.example.com`), an address or CIDR (IPv4 or
//! IPv6; IPv4-mapped IPv6 is turned into IPv4 so it cannot slip past an
//! IPv4 rule) or `port N[-M]`. A rule that does not parse is refused with
//! the column where it went wrong.

use std::fmt;
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Allow,
    Deny,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
        }
    }
}

/// What a rule matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// `name` lowercase, without a trailing dot; `wildcard`: `*.name`,
    /// which matches names below `name` but not `name` itself.
    Domain {
        name: String,
        wildcard: bool,
    },
    Cidr(IpNet),
    /// An inclusive port range (`lo == hi` for one port).
    Port {
        lo: u16,
        hi: u16,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    pub action: Action,
    pub target: Target,
}

/// Why a rule did not parse, and where (1-based column in the rule text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {reason}")]
pub struct RuleError {
    pub column: usize,
    pub reason: String,
}

fn err(column: usize, reason: impl Into<String>) -> RuleError {
    RuleError {
        column,
        reason: reason.into(),
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Domain { name, wildcard } => {
                write!(f, "{}{name}", if *wildcard { "*." } else { "" })
            }
            Target::Cidr(net) => write!(f, "{net}"),
            Target::Port { lo, hi } if lo == hi => write!(f, "port {lo}"),
            Target::Port { lo, hi } => write!(f, "port {lo}-{hi}"),
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.action.as_str(), self.target)
    }
}

/// The words of `text` with their 1-based start columns.
fn words(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        match (c.is_whitespace(), start) {
            (true, Some(s)) => {
                out.push((s, &text[s..i]));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, &text[s..]));
    }
    out.into_iter().map(|(s, w)| (s + 1, w)).collect()
}

impl std::str::FromStr for Rule {
    type Err = RuleError;

    fn from_str(text: &str) -> Result<Rule, RuleError> {
        let w = words(text);
        let Some(&(col, verb)) = w.first() else {
            return Err(err(
                1,
                "empty rule; expected `allow TARGET` or `deny TARGET`",
            ));
        };
        let action = match verb.to_ascii_lowercase().as_str() {
            "allow" => Action::Allow,
            "deny" => Action::Deny,
            _ => return Err(err(col, format!("{verb:?}: expected allow or deny"))),
        };
        let end = text.chars().count() + 1;
        let target = match &w[1..] {
            [] => {
                return Err(err(
                    end,
                    "missing target (a domain, an address/CIDR or `port N`)",
                ))
            }
            [(_, kw), rest @ ..] if kw.eq_ignore_ascii_case("port") => match rest {
                [(c, p)] => parse_ports(p, *c)?,
                [] => return Err(err(end, "`port` needs a number or a range N-M")),
                [_, (c, extra), ..] => {
                    return Err(err(*c, format!("unexpected {extra:?} after the port")))
                }
            },
            [(c, t)] => parse_target(t, *c)?,
            [_, (c, extra), ..] => {
                return Err(err(
                    *c,
                    format!("unexpected {extra:?}: one target per rule"),
                ))
            }
        };
        Ok(Rule { action, target })
    }
}

fn parse_port(s: &str, column: usize) -> Result<u16, RuleError> {
    match s.parse::<u32>() {
        Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
        Ok(n) => Err(err(column, format!("port {n} is outside 1-65535"))),
        Err(_) => Err(err(column, format!("{s:?} is not a port number"))),
    }
}

fn parse_ports(s: &str, column: usize) -> Result<Target, RuleError> {
    match s.split_once('-') {
        None => {
            let p = parse_port(s, column)?;
            Ok(Target::Port { lo: p, hi: p })
        }
        Some((a, b)) => {
            let lo = parse_port(a, column)?;
            let hi = parse_port(b, column + a.len() + 1)?;
            if lo > hi {
                return Err(err(column, format!("range {s:?} runs backwards")));
            }
            Ok(Target::Port { lo, hi })
        }
    }
}

/// IPv4-mapped IPv6 (`::ffff:a.b.c.d/96+n`) as the IPv4 network it is.
pub fn canonical_net(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net {
        if let Some(v4) = v6.addr().to_ipv4_mapped() {
            if v6.prefix_len() >= 96 {
                if let Ok(n) = Ipv4Net::new(v4, v6.prefix_len() - 96) {
                    return IpNet::V4(n);
                }
            }
        }
    }
    net
}

fn parse_cidr(s: &str, column: usize) -> Result<Target, RuleError> {
    let bare = s.trim_start_matches('[').replace(']', "");
    let net = if bare.contains('/') {
        let net: IpNet = bare
            .parse()
            .map_err(|_| err(column, format!("{s:?} is not an address or CIDR")))?;
        if net.trunc() != net {
            return Err(err(
                column + bare.find('/').unwrap_or(0),
                format!("{s:?} has host bits set (did you mean {}?)", net.trunc()),
            ));
        }
        net
    } else {
        let ip: IpAddr = bare
            .parse()
            .map_err(|_| err(column, format!("{s:?} is not an address or CIDR")))?;
        IpNet::from(ip)
    };
    Ok(Target::Cidr(canonical_net(net)))
}

/// A DNS name: labels of letters, digits, '-' and '_' (1-63 each), at most
/// 253 characters, at least one dot-free label.
fn check_name(name: &str, column: usize) -> Result<(), RuleError> {
    if name.is_empty() || name.len() > 253 {
        return Err(err(
            column,
            format!("{name:?} is not a domain name (1-253 characters)"),
        ));
    }
    let mut at = column;
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(err(at, format!("empty or over-long label in {name:?}")));
        }
        if let Some(i) = label.find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        {
            let bad = label[i..].chars().next().unwrap_or('?');
            return Err(err(
                at + i,
                format!("{bad:?} cannot appear in a domain name"),
            ));
        }
        at += label.len() + 1;
    }
    Ok(())
}

fn parse_target(s: &str, column: usize) -> Result<Target, RuleError> {
    if s.contains(':') || s.contains('/') || s.parse::<IpAddr>().is_ok() {
        return parse_cidr(s, column);
    }
    let lower = s.to_ascii_lowercase();
    let lower = lower.strip_suffix('.').unwrap_or(&lower);
    let (name, wildcard, col) = match lower.strip_prefix("*.") {
        Some(rest) => (rest, true, column + 2),
        None => (lower, false, column),
    };
    if let Some(i) = name.find('*') {
        return Err(err(
            col + i,
            "'*' is only allowed as the whole first label (`*.example.com`)",
        ));
    }
    // All digits and dots but not an address: a typo, not a name.
    if name.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(err(column, format!("{s:?} is not an IPv4 address")));
    }
    check_name(name, col)?;
    Ok(Target::Domain {
        name: name.to_string(),
        wildcard,
    })
}

/// Why one rule of a list did not parse: its index (0-based), text and
/// column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rule {} ({text:?}), column {}: {}", index + 1, error.column, error.reason)]
pub struct ListError {
    pub index: usize,
    pub text: String,
    pub error: RuleError,
}

/// Parse every rule, or refuse the list at the first bad one.
pub fn parse_all<S: AsRef<str>>(texts: &[S]) -> Result<Vec<Rule>, ListError> {
    texts
        .iter()
        .enumerate()
        .map(|(index, t)| {
            t.as_ref().parse().map_err(|error| ListError {
                index,
                text: t.as_ref().to_string(),
                error,
            })
        })
        .collect()
}
