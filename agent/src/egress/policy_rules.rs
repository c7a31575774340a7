//! The egress policy as the `nat` backend enforces it: CIDR and port rules
//! turned into forward rules ahead of the backend's own (domain rules are
//! for the proxy and DNS; the kernel never sees names). Order, as the
//! policy decides: explicit denials, explicit allows (the backend's accept
//! rules narrowed to the allowed destination), the preset's denials, and
//! for `locked` a final drop.

use ipnet::IpNet;

use super::Family;

/// What the kernel can match of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    Cidr(IpNet),
    Ports { lo: u16, hi: u16 },
}

/// A network's policy, reduced to what the kernel can enforce.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatPolicy {
    pub deny: Vec<Match>,
    pub allow: Vec<Match>,
    pub preset_deny: Vec<IpNet>,
    /// Everything not allowed is dropped.
    pub locked: bool,
}

/// Where the backend gets a network's policy when it (re)builds its rules.
pub trait PolicySource: Send + Sync {
    fn nat_policy(&self, network: &str) -> Option<NatPolicy>;
}

fn family_of(net: &IpNet) -> Family {
    match net {
        IpNet::V4(_) => Family::V4,
        IpNet::V6(_) => Family::V6,
    }
}

fn ports(lo: u16, hi: u16) -> String {
    if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}:{hi}")
    }
}

impl NatPolicy {
    /// The forward rules for one family: the policy's, then `backend`
    /// (the backend's forward rules, whose accepts start with `out`).
    pub fn forward_rules(&self, bridge: &str, family: Family, backend: &[String]) -> Vec<String> {
        let out = format!("-i {bridge} ! -o {bridge}");
        let mut rules = Vec::new();
        for m in &self.deny {
            match m {
                Match::Cidr(n) if family_of(n) == family => {
                    rules.push(format!("{out} -d {n} -j DROP"))
                }
                Match::Cidr(_) => {}
                Match::Ports { lo, hi } => {
                    for p in ["tcp", "udp"] {
                        rules.push(format!(
                            "{out} -p {p} -m {p} --dport {} -j DROP",
                            ports(*lo, *hi)
                        ));
                    }
                }
            }
        }
        let accepts: Vec<&String> = backend
            .iter()
            .filter(|r| {
                r.starts_with(&out) && (r.ends_with("-j ACCEPT") || r.ends_with("-j RETURN"))
            })
            .collect();
        if !self.preset_deny.is_empty() || self.locked {
            for m in &self.allow {
                for a in &accepts {
                    let rest = a[out.len()..].trim_start();
                    let narrowed = match m {
                        Match::Cidr(n) if family_of(n) == family => format!("-d {n} {rest}"),
                        Match::Cidr(_) => continue,
                        Match::Ports { lo, hi } => {
                            // The backend's accept may name a protocol
                            // already; ports need one.
                            let protos: Vec<&str> = match rest.strip_prefix("-p ") {
                                Some(r) => r.split_whitespace().take(1).collect(),
                                None => vec!["tcp", "udp"],
                            };
                            let tail = rest
                                .strip_prefix("-p ")
                                .and_then(|r| r.split_once(' ').map(|(_, t)| t))
                                .unwrap_or(rest);
                            for p in protos {
                                rules.push(format!(
                                    "{out} -p {p} -m {p} --dport {} {tail}",
                                    ports(*lo, *hi)
                                ));
                            }
                            continue;
                        }
                    };
                    rules.push(format!("{out} {narrowed}"));
                }
            }
        }
        for n in self.preset_deny.iter().filter(|n| family_of(n) == family) {
            rules.push(format!("{out} -d {n} -j DROP"));
        }
        if self.locked {
            rules.push(format!("{out} -j DROP"));
        }
        rules.extend(backend.iter().cloned());
        rules
    }

    /// The rules for Docker's DOCKER-USER chain, where Docker does the NAT
    /// (a real kernel): replies of allowed flows and of connections made
    /// to the containers pass first; an allowed packet returns to Docker's
    /// own rules, a denied one is dropped.
    pub fn docker_user_rules(&self, bridge: &str, family: Family) -> Vec<String> {
        let out = format!("-i {bridge} ! -o {bridge}");
        let mut rules = vec![format!(
            "{out} -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN"
        )];
        rules.extend(self.forward_rules(bridge, family, &[format!("{out} -j RETURN")]));
        rules
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denials_then_allows_then_preset_then_backend() {
        let p = NatPolicy {
            deny: vec![
                Match::Cidr("198.51.100.11/32".parse().unwrap()),
                Match::Cidr("2001:db8::/32".parse().unwrap()),
                Match::Ports { lo: 25, hi: 25 },
            ],
            allow: vec![
                Match::Cidr("10.1.0.0/16".parse().unwrap()),
                Match::Ports { lo: 8000, hi: 8100 },
            ],
            preset_deny: vec!["10.0.0.0/8".parse().unwrap(), "fc00::/7".parse().unwrap()],
            locked: false,
        };
        let backend = vec![
            "-i br ! -o br -p tcp -j ACCEPT".to_string(),
            "-i br ! -o br -j DROP".to_string(),
        ];
        assert_eq!(
            p.forward_rules("br", Family::V4, &backend),
            vec![
                "-i br ! -o br -d 198.51.100.11/32 -j DROP",
                "-i br ! -o br -p tcp -m tcp --dport 25 -j DROP",
                "-i br ! -o br -p udp -m udp --dport 25 -j DROP",
                "-i br ! -o br -d 10.1.0.0/16 -p tcp -j ACCEPT",
                "-i br ! -o br -p tcp -m tcp --dport 8000:8100 -j ACCEPT",
                "-i br ! -o br -d 10.0.0.0/8 -j DROP",
                "-i br ! -o br -p tcp -j ACCEPT",
                "-i br ! -o br -j DROP",
            ]
        );
        let v6 = p.forward_rules("br", Family::V6, &[]);
        assert!(v6.contains(&"-i br ! -o br -d 2001:db8::/32 -j DROP".to_string()));
        assert!(v6.contains(&"-i br ! -o br -d fc00::/7 -j DROP".to_string()));
        assert!(!v6.iter().any(|r| r.contains("198.51")));
    }

    #[test]
    fn on_docker_user_allows_return_to_docker_and_replies_pass_first() {
        let p = NatPolicy {
            deny: vec![Match::Cidr("203.0.113.10/32".parse().unwrap())],
            allow: vec![Match::Ports { lo: 443, hi: 443 }],
            locked: true,
            ..Default::default()
        };
        assert_eq!(
            p.docker_user_rules("br-1", Family::V4),
            vec![
                "-i br-1 ! -o br-1 -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN",
                "-i br-1 ! -o br-1 -d 203.0.113.10/32 -j DROP",
                "-i br-1 ! -o br-1 -p tcp -m tcp --dport 443 -j RETURN",
                "-i br-1 ! -o br-1 -p udp -m udp --dport 443 -j RETURN",
                "-i br-1 ! -o br-1 -j DROP",
                "-i br-1 ! -o br-1 -j RETURN",
            ]
        );
        let open = NatPolicy::default().docker_user_rules("br-1", Family::V6);
        assert_eq!(open.len(), 2, "{open:?}");
    }

    #[test]
    fn locked_drops_the_rest() {
        let p = NatPolicy {
            allow: vec![Match::Cidr("198.51.100.10/32".parse().unwrap())],
            locked: true,
            ..Default::default()
        };
        let backend = vec!["-i br ! -o br -j ACCEPT".to_string()];
        assert_eq!(
            p.forward_rules("br", Family::V4, &backend),
            vec![
                "-i br ! -o br -d 198.51.100.10/32 -j ACCEPT",
                "-i br ! -o br -j DROP",
                "-i br ! -o br -j ACCEPT",
            ]
        );
    }
}
