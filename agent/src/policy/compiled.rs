//! A network's policy: a preset and a rule list ([`PolicySpec`], what is
//! stored and shown), compiled into lookup tables ([`Compiled`], what
//! decides).
//!
//! Precedence, first match wins:
//! 1. an explicit `deny` rule matching the name, the address or the port;
//! 2. the preset's denials (`balanced`: private, loopback, link-local and
//!    metadata ranges), unless an explicit `allow` CIDR covers the address
//!    (an allowed *name* never opens a denied range);
//! 3. an explicit `allow` rule matching the name, the address or the port;
//! 4. the preset's default: allow (`open`, `balanced`), deny (`locked`).
//!
//! Addresses are taken in canonical form first: an IPv4-mapped IPv6
//! address is decided as the IPv4 address it carries.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::rule::{self, Action, ListError, Rule, Target};
use super::tables::{DomainTable, PortTable, PrefixTable, RuleId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// Everything not denied is allowed.
    #[default]
    Open,
    /// Like `open`, with the sandbox's own ranges denied.
    Balanced,
    /// Only what an allow rule names.
    Locked,
}

impl Preset {
    pub fn as_str(self) -> &'static str {
        match self {
            Preset::Open => "open",
            Preset::Balanced => "balanced",
            Preset::Locked => "locked",
        }
    }
}

impl std::str::FromStr for Preset {
    type Err = String;
    fn from_str(s: &str) -> Result<Preset, String> {
        match s {
            "open" => Ok(Preset::Open),
            "balanced" => Ok(Preset::Balanced),
            "locked" => Ok(Preset::Locked),
            other => Err(format!(
                "unknown preset {other:?}: expected open, balanced or locked"
            )),
        }
    }
}

/// What `balanced` denies, most specific first so that the metadata
/// addresses are named as such.
pub const BALANCED_DENIED: &[(&str, &str)] = &[
    ("169.254.169.254/32", "cloud metadata"),
    ("fd00:ec2::254/128", "cloud metadata (IPv6)"),
    ("0.0.0.0/8", "this network"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared address space"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.168.0.0/16", "private"),
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("fc00::/7", "unique local"),
    ("fe80::/10", "link-local"),
];

/// A network's policy as stored and shown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    #[serde(default)]
    pub preset: Preset,
    #[serde(default)]
    pub rules: Vec<String>,
}

/// A decision and the rule that made it (`None`: the preset's default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict<'a> {
    pub allow: bool,
    pub rule: &'a str,
}

#[derive(Debug, Clone, Default)]
struct Tables {
    domains: DomainTable,
    v4: PrefixTable<u32>,
    v6: PrefixTable<u128>,
    ports: PortTable,
}

impl Tables {
    fn build(rules: &[(RuleId, &Rule)]) -> Tables {
        let mut t = Tables::default();
        let mut ports = Vec::new();
        for &(id, r) in rules {
            match &r.target {
                Target::Domain { name, wildcard } => t.domains.insert(name, *wildcard, id),
                Target::Cidr(IpNet::V4(n)) => t.v4.insert(n.addr().to_bits(), n.prefix_len(), id),
                Target::Cidr(IpNet::V6(n)) => t.v6.insert(n.addr().to_bits(), n.prefix_len(), id),
                Target::Port { lo, hi } => ports.push((*lo, *hi, id)),
            }
        }
        t.ports = PortTable::build(&ports);
        t
    }

    fn ip(&self, ip: IpAddr) -> Option<RuleId> {
        match ip {
            IpAddr::V4(a) => self.v4.lookup(a.to_bits()),
            IpAddr::V6(a) => self.v6.lookup(a.to_bits()),
        }
    }

    fn any(&self, host: Option<&str>, ip: Option<IpAddr>, port: u16) -> Option<RuleId> {
        [
            host.and_then(|h| self.domains.lookup(h)),
            ip.and_then(|a| self.ip(a)),
            self.ports.lookup(port),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

/// A policy ready to decide.
#[derive(Debug, Clone, Default)]
pub struct Compiled {
    spec: PolicySpec,
    rules: Vec<Rule>,
    deny: Tables,
    allow: Tables,
    preset_deny: Tables,
    /// The preset's rules' names, by index in `preset_deny`.
    preset_names: Vec<String>,
    locked_name: String,
}

impl Compiled {
    /// Parse and compile; a rule that does not parse refuses the whole
    /// policy, naming its index and column.
    pub fn new(spec: PolicySpec) -> Result<Compiled, ListError> {
        let rules = rule::parse_all(&spec.rules)?;
        let of = |a: Action| -> Vec<(RuleId, &Rule)> {
            rules
                .iter()
                .enumerate()
                .filter(|(_, r)| r.action == a)
                .map(|(i, r)| (i as RuleId, r))
                .collect()
        };
        let deny = Tables::build(&of(Action::Deny));
        let allow = Tables::build(&of(Action::Allow));
        let mut preset_rules = Vec::new();
        let mut preset_names = Vec::new();
        if spec.preset == Preset::Balanced {
            for (i, (cidr, why)) in BALANCED_DENIED.iter().enumerate() {
                if let Ok(net) = cidr.parse::<IpNet>() {
                    preset_rules.push(Rule {
                        action: Action::Deny,
                        target: Target::Cidr(net),
                    });
                    preset_names.push(format!("preset balanced: deny {cidr} ({why})"));
                    debug_assert_eq!(preset_names.len(), i + 1);
                }
            }
        }
        let preset_deny = Tables::build(
            &preset_rules
                .iter()
                .enumerate()
                .map(|(i, r)| (i as RuleId, r))
                .collect::<Vec<_>>(),
        );
        Ok(Compiled {
            locked_name: "preset locked: not on the allow list".into(),
            spec,
            rules,
            deny,
            allow,
            preset_deny,
            preset_names,
        })
    }

    pub fn spec(&self) -> &PolicySpec {
        &self.spec
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    fn named(&self, id: RuleId) -> &str {
        self.spec.rules.get(id as usize).map_or("?", |s| s.as_str())
    }

    /// Decide about a connection: the host name when known (SNI, Host, the
    /// proxy request's name), the address when known, the port.
    pub fn decide(&self, host: Option<&str>, ip: Option<IpAddr>, port: u16) -> Verdict<'_> {
        let ip = ip.map(|a| a.to_canonical());
        if let Some(id) = self.deny.any(host, ip, port) {
            return Verdict {
                allow: false,
                rule: self.named(id),
            };
        }
        if let Some(a) = ip {
            if let Some(id) = self.preset_deny.ip(a) {
                if self.allow.ip(a).is_none() {
                    return Verdict {
                        allow: false,
                        rule: self.preset_names.get(id as usize).map_or("preset", |s| s),
                    };
                }
            }
        }
        if let Some(id) = self.allow.any(host, ip, port) {
            return Verdict {
                allow: true,
                rule: self.named(id),
            };
        }
        self.preset_default()
    }

    /// What no rule decided: `locked` refuses, every other preset allows.
    fn preset_default(&self) -> Verdict<'_> {
        match self.spec.preset {
            Preset::Locked => Verdict {
                allow: false,
                rule: &self.locked_name,
            },
            p => Verdict {
                allow: true,
                rule: p.as_str(),
            },
        }
    }

    /// Decide about a DNS name: refused when a deny rule names it, or when
    /// `locked` and no allow rule names it.
    pub fn decide_name(&self, name: &str) -> Verdict<'_> {
        if let Some(id) = self.deny.domains.lookup(name) {
            return Verdict {
                allow: false,
                rule: self.named(id),
            };
        }
        if let Some(id) = self.allow.domains.lookup(name) {
            return Verdict {
                allow: true,
                rule: self.named(id),
            };
        }
        self.preset_default()
    }

    /// Whether decisions can depend on a host name (else the transparent
    /// proxy need not wait for the client's first bytes).
    pub fn uses_names(&self) -> bool {
        !self.deny.domains.is_empty() || !self.allow.domains.is_empty()
    }

    /// The preset's denied networks, for the nat backend's rules.
    pub fn preset_denied(&self) -> Vec<(IpNet, &str)> {
        if self.spec.preset != Preset::Balanced {
            return Vec::new();
        }
        BALANCED_DENIED
            .iter()
            .zip(&self.preset_names)
            .filter_map(|((c, _), n)| Some((c.parse().ok()?, n.as_str())))
            .collect()
    }
}
