//! `doctor`: probe what works here, inside throwaway namespaces, and leave
//! nothing behind. The daemon runs the same probe at start-up and chooses
//! its environment-dependent backends from the typed report (`Report::works`
//! with a `CheckId`), never from strings.
//!
//! One file per probe: `links` (bridge, veth, addresses, routes, sysctl),
//! `subscription` (netlink multicast), `firewall` (iptables-legacy NAT,
//! nftables), `docker`, `preload`, `tun`.

mod docker;
mod firewall;
mod links;
mod preload;
mod subscription;
mod tun;

use std::path::Path;

use netns::ScratchNamespaces;
use serde::{Deserialize, Serialize};

use crate::platform::{self, Platform};
use crate::render;

pub use docker::docker_socket;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Works.
    Ok,
    /// Partly works, or works with a caveat.
    Warn,
    /// Does not work.
    Fail,
    /// Not tried (something it depends on failed).
    Skip,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Warn => "partial",
            Outcome::Fail => "no",
            Outcome::Skip => "skipped",
        }
    }
}

/// Every check, by a stable id (its JSON spelling is what scripts read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckId {
    Runtime,
    NamedNetns,
    Bridge,
    Veth,
    MoveByFd,
    Addresses,
    Routes,
    RouteDelete,
    Sysctl,
    NetlinkSubscription,
    IptablesSnat,
    IptablesMasquerade,
    IptablesRedirect,
    Nftables,
    Tun,
    Docker,
    Preload,
}

impl CheckId {
    /// The row's title in the table.
    pub fn title(self) -> &'static str {
        match self {
            CheckId::Runtime => "async runtime",
            CheckId::NamedNetns => "named namespaces",
            CheckId::Bridge => "bridge",
            CheckId::Veth => "veth pair",
            CheckId::MoveByFd => "veth peer placed by netns fd",
            CheckId::Addresses => "addresses",
            CheckId::Routes => "routes",
            CheckId::RouteDelete => "route delete",
            CheckId::Sysctl => "sysctl net.ipv4.ip_forward",
            CheckId::NetlinkSubscription => "netlink subscription",
            CheckId::IptablesSnat => "iptables-legacy nat SNAT",
            CheckId::IptablesMasquerade => "iptables-legacy nat MASQUERADE",
            CheckId::IptablesRedirect => "iptables-legacy nat REDIRECT",
            CheckId::Nftables => "nftables",
            CheckId::Tun => "/dev/net/tun",
            CheckId::Docker => "Docker daemon",
            CheckId::Preload => "preload library",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub id: CheckId,
    pub title: String,
    pub outcome: Outcome,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub platform: Platform,
    pub checks: Vec<Check>,
}

impl Report {
    pub fn get(&self, id: CheckId) -> Option<&Check> {
        self.checks.iter().find(|c| c.id == id)
    }

    pub fn works(&self, id: CheckId) -> bool {
        self.get(id).is_some_and(|c| c.outcome == Outcome::Ok)
    }

    /// The report as a table.
    pub fn table(&self) -> String {
        let p = &self.platform;
        let mut out = format!(
            "platform: {} (release {}; {}){}\n\n",
            p.kind,
            p.release,
            p.evidence,
            p.runsc
                .as_ref()
                .map(|v| format!("; runsc on PATH: {v}"))
                .unwrap_or_default()
        );
        let rows: Vec<Vec<String>> = self
            .checks
            .iter()
            .map(|c| {
                vec![
                    c.title.clone(),
                    c.outcome.label().to_string(),
                    c.detail.clone(),
                ]
            })
            .collect();
        out.push_str(&render::table(&["CHECK", "RESULT", "DETAIL"], &rows));
        out
    }
}

/// The checks made so far.
#[derive(Default)]
pub(crate) struct Checks(Vec<Check>);

impl Checks {
    pub(crate) fn add(&mut self, id: CheckId, outcome: Outcome, detail: impl Into<String>) {
        self.0.push(Check {
            id,
            title: id.title().to_string(),
            outcome,
            detail: detail.into(),
        });
    }

    /// Ok(detail) -> ok, Err(why) -> no; true when it worked.
    pub(crate) fn result<E: std::fmt::Display>(
        &mut self,
        id: CheckId,
        r: Result<String, E>,
    ) -> bool {
        match r {
            Ok(detail) => {
                self.add(id, Outcome::Ok, detail);
                true
            }
            Err(e) => {
                self.add(id, Outcome::Fail, e.to_string());
                false
            }
        }
    }

    pub(crate) fn skip(&mut self, ids: &[CheckId], why: &str) {
        for id in ids {
            self.add(*id, Outcome::Skip, why);
        }
    }
}

/// Everything `doctor` checks. Needs no daemon; creates and deletes its own
/// namespaces (named `cnd-doctor-PID-*`).
pub fn run() -> Report {
    let mut platform = platform::detect();
    platform.runsc = platform::runsc_version();
    let mut checks = Checks::default();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            checks.add(CheckId::Runtime, Outcome::Fail, e.to_string());
            return Report {
                platform,
                checks: checks.0,
            };
        }
    };
    // iptables creates its lock file on first use: leave none behind.
    let xtables_lock = Path::new("/run/xtables.lock");
    let had_lock = xtables_lock.exists();
    rt.block_on(probe_namespaces(&mut checks));
    if !had_lock && xtables_lock.exists() {
        let _ = std::fs::remove_file(xtables_lock);
    }
    tun::probe(&mut checks);
    rt.block_on(docker::probe(&mut checks));
    preload::probe(&mut checks);
    Report {
        platform,
        checks: checks.0,
    }
}

/// The probes that need throwaway namespaces: two of them, deleted after.
async fn probe_namespaces(c: &mut Checks) {
    let mut scratch = ScratchNamespaces::new(format!("cnd-doctor-{}", std::process::id()));
    let (a, b) = match (scratch.create("a"), scratch.create("b")) {
        (Ok(a), Ok(b)) => {
            let listed = netns::Netns::list().unwrap_or_default();
            let ok = listed.iter().any(|n| n == &scratch.name("a"));
            c.add(
                CheckId::NamedNetns,
                if ok { Outcome::Ok } else { Outcome::Warn },
                if ok {
                    format!("created, opened and listed under {}", netns::NETNS_RUN_DIR)
                } else {
                    "created but not listed".to_string()
                },
            );
            (a, b)
        }
        (Err(e), _) | (_, Err(e)) => {
            c.add(CheckId::NamedNetns, Outcome::Fail, e.to_string());
            c.skip(&links::CHECKS, "needs named namespaces");
            c.skip(&[CheckId::NetlinkSubscription], "needs named namespaces");
            c.skip(&firewall::CHECKS, "needs named namespaces");
            return;
        }
    };
    links::probe(c, &a, &b).await;
    subscription::probe(c, &a);
    firewall::probe(c, &a);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_lists_every_check_and_json_keeps_the_ids() {
        let mut checks = Checks::default();
        checks.add(CheckId::Tun, Outcome::Fail, "ENOENT");
        checks.add(CheckId::IptablesSnat, Outcome::Ok, "rule accepted");
        let r = Report {
            platform: Platform {
                kind: "kernel".into(),
                release: "6.18".into(),
                evidence: "x".into(),
                runsc: None,
            },
            checks: checks.0,
        };
        let t = r.table();
        assert!(t.contains("platform: kernel"));
        assert!(t.contains("/dev/net/tun"), "{t}");
        assert!(!r.works(CheckId::Tun));
        assert!(r.works(CheckId::IptablesSnat));
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["checks"][0]["outcome"], "fail");
        assert_eq!(j["checks"][1]["id"], "iptables_snat");
    }
}
