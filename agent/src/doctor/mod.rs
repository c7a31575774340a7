//! `doctor`: probe what works here, inside throwaway namespaces, and leave
//! nothing behind. The daemon runs the same probe at start-up.

mod subscription;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ipnet::IpNet;
use netns::{Handle, Netns, Route, VethSpec};
use serde::{Deserialize, Serialize};

use crate::platform::{self, Platform};

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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// Stable identifier, for scripts.
    pub id: String,
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
    pub fn get(&self, id: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.id == id)
    }

    pub fn works(&self, id: &str) -> bool {
        self.get(id).is_some_and(|c| c.outcome == Outcome::Ok)
    }

    /// The report as a table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let p = &self.platform;
        out.push_str(&format!(
            "platform: {} (release {}; {}){}\n\n",
            p.kind,
            p.release,
            p.evidence,
            p.runsc
                .as_ref()
                .map(|v| format!("; runsc on PATH: {v}"))
                .unwrap_or_default()
        ));
        let w = self
            .checks
            .iter()
            .map(|c| c.title.len())
            .max()
            .unwrap_or(5)
            .max(5);
        out.push_str(&format!("{:<w$}  {:<8}  DETAIL\n", "CHECK", "RESULT"));
        for c in &self.checks {
            out.push_str(&format!(
                "{:<w$}  {:<8}  {}\n",
                c.title,
                c.outcome.label(),
                c.detail
            ));
        }
        out
    }
}

struct Checks(Vec<Check>);

impl Checks {
    fn add(&mut self, id: &str, title: &str, outcome: Outcome, detail: impl Into<String>) {
        self.0.push(Check {
            id: id.into(),
            title: title.into(),
            outcome,
            detail: detail.into(),
        });
    }

    fn result<E: std::fmt::Display>(
        &mut self,
        id: &str,
        title: &str,
        r: Result<String, E>,
    ) -> bool {
        match r {
            Ok(detail) => {
                self.add(id, title, Outcome::Ok, detail);
                true
            }
            Err(e) => {
                self.add(id, title, Outcome::Fail, e.to_string());
                false
            }
        }
    }
}

/// Throwaway named namespaces, deleted on drop.
struct Scratch {
    names: Vec<String>,
}

impl Scratch {
    fn create(&mut self, name: String) -> netns::Result<Netns> {
        let ns = Netns::create(&name)?;
        self.names.push(name);
        Ok(ns)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for n in &self.names {
            if let Err(e) = Netns::delete(n) {
                tracing::warn!(error = %e, "doctor: could not delete namespace {n}");
            }
        }
    }
}

/// Everything `doctor` checks. Needs no daemon; creates and deletes its own
/// namespaces (named `cnd-doctor-PID-*`).
pub fn run() -> Report {
    let mut platform = platform::detect();
    platform.runsc = platform::runsc_version();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let mut checks = Checks(Vec::new());
            checks.add("runtime", "async runtime", Outcome::Fail, e.to_string());
            return Report {
                platform,
                checks: checks.0,
            };
        }
    };
    let xtables_lock = Path::new("/run/xtables.lock");
    let had_lock = xtables_lock.exists();
    let mut checks = Checks(Vec::new());
    rt.block_on(probe_namespaces(&mut checks));
    if !had_lock && xtables_lock.exists() {
        let _ = std::fs::remove_file(xtables_lock);
    }
    probe_tun(&mut checks);
    rt.block_on(probe_docker(&mut checks));
    probe_preload(&mut checks);
    Report {
        platform,
        checks: checks.0,
    }
}

async fn probe_namespaces(c: &mut Checks) {
    let base = format!("cnd-doctor-{}", std::process::id());
    let mut scratch = Scratch { names: Vec::new() };
    let dependent = [
        ("bridge", "bridge"),
        ("veth", "veth pair"),
        ("move_by_fd", "veth peer placed by netns fd"),
        ("addresses", "addresses"),
        ("routes", "routes"),
        ("route_delete", "route delete"),
        ("sysctl", "sysctl net.ipv4.ip_forward"),
        ("netlink_subscription", "netlink subscription"),
        ("iptables_snat", "iptables-legacy nat SNAT"),
        ("iptables_masquerade", "iptables-legacy nat MASQUERADE"),
        ("nftables", "nftables"),
    ];
    let (a, b) = match (
        scratch.create(format!("{base}-a")),
        scratch.create(format!("{base}-b")),
    ) {
        (Ok(a), Ok(b)) => {
            let listed = Netns::list().unwrap_or_default();
            let ok = listed.iter().any(|n| n == &format!("{base}-a"));
            c.add(
                "named_netns",
                "named namespaces",
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
            c.add(
                "named_netns",
                "named namespaces",
                Outcome::Fail,
                e.to_string(),
            );
            for (id, title) in dependent {
                c.add(id, title, Outcome::Skip, "needs named namespaces");
            }
            return;
        }
    };

    probe_links(c, &a, &b).await;

    // Multicast subscription, inside the throwaway namespace.
    let sub = a.run(|| {
        (
            subscription::bind_with_groups(),
            subscription::add_membership(),
        )
    });
    match sub {
        Ok((Ok(()), Ok(()))) => c.add(
            "netlink_subscription",
            "netlink subscription",
            Outcome::Ok,
            "bind with nl_groups and NETLINK_ADD_MEMBERSHIP accepted",
        ),
        Ok((bind, member)) => c.add(
            "netlink_subscription",
            "netlink subscription",
            Outcome::Fail,
            format!(
                "bind with groups: {}; NETLINK_ADD_MEMBERSHIP: {}",
                bind.map(|_| "ok".to_string())
                    .unwrap_or_else(|e| e.to_string()),
                member
                    .map(|_| "ok".to_string())
                    .unwrap_or_else(|e| e.to_string())
            ),
        ),
        Err(e) => c.add(
            "netlink_subscription",
            "netlink subscription",
            Outcome::Fail,
            e.to_string(),
        ),
    }

    // iptables-legacy and nft, run inside the throwaway namespace: whatever
    // they add dies with it.
    let snat = run_in(
        &a,
        "iptables-legacy",
        &[
            "-w",
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-s",
            "10.254.0.0/24",
            "-j",
            "SNAT",
            "--to-source",
            "10.255.0.1",
        ],
    );
    c.result(
        "iptables_snat",
        "iptables-legacy nat SNAT",
        snat.map(|_| "rule accepted".into()),
    );
    let masq = run_in(
        &a,
        "iptables-legacy",
        &[
            "-w",
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-s",
            "10.254.0.0/24",
            "-j",
            "MASQUERADE",
        ],
    );
    c.result(
        "iptables_masquerade",
        "iptables-legacy nat MASQUERADE",
        masq.map(|_| "rule accepted (-p tcp)".into()),
    );
    let nft = run_in(&a, "nft", &["add", "table", "ip", "cnd_doctor"])
        .and_then(|_| run_in(&a, "nft", &["list", "ruleset"]));
    c.result(
        "nftables",
        "nftables",
        nft.map(|_| "table added and ruleset listed".into()),
    );
    drop(a);
    drop(b);
    drop(scratch);
}

async fn probe_links(c: &mut Checks, a: &Netns, b: &Netns) {
    let skip_rest = |c: &mut Checks, from: usize, why: &str| {
        let rest = [
            ("bridge", "bridge"),
            ("veth", "veth pair"),
            ("move_by_fd", "veth peer placed by netns fd"),
            ("addresses", "addresses"),
            ("routes", "routes"),
            ("route_delete", "route delete"),
            ("sysctl", "sysctl net.ipv4.ip_forward"),
        ];
        for (id, title) in &rest[from..] {
            c.add(id, title, Outcome::Skip, why);
        }
    };
    let (ha, hb) = match (Handle::open(a), Handle::open(b)) {
        (Ok(ha), Ok(hb)) => (ha, hb),
        (Err(e), _) | (_, Err(e)) => {
            skip_rest(c, 0, &format!("no netlink handle: {e}"));
            return;
        }
    };
    let bridge = match ha.ensure_bridge("cnd-br0", None).await {
        Ok(l) => {
            c.add(
                "bridge",
                "bridge",
                Outcome::Ok,
                format!("created cnd-br0 (#{})", l.index),
            );
            l
        }
        Err(e) => {
            c.add("bridge", "bridge", Outcome::Fail, e.to_string());
            skip_rest(c, 1, "needs a bridge");
            return;
        }
    };
    let veth = ha
        .create_veth(&VethSpec {
            name: "cnd-v0",
            peer_name: "cnd-p0",
            peer_ns: b,
            master: Some(bridge.index),
            mtu: None,
            peer_mac: None,
            up: true,
        })
        .await;
    let peer = match veth {
        Ok(_) => {
            c.add(
                "veth",
                "veth pair",
                Outcome::Ok,
                "created, host end attached to the bridge",
            );
            match hb.link_by_name("cnd-p0").await {
                Ok(p) => {
                    c.add(
                        "move_by_fd",
                        "veth peer placed by netns fd",
                        Outcome::Ok,
                        "peer created inside the other namespace",
                    );
                    Some(p)
                }
                Err(e) => {
                    c.add(
                        "move_by_fd",
                        "veth peer placed by netns fd",
                        Outcome::Fail,
                        format!("peer not found in the target namespace: {e}"),
                    );
                    None
                }
            }
        }
        Err(e) => {
            c.add("veth", "veth pair", Outcome::Fail, e.to_string());
            c.add(
                "move_by_fd",
                "veth peer placed by netns fd",
                Outcome::Skip,
                "needs a veth pair",
            );
            None
        }
    };
    let gw: IpNet = "10.255.0.1/24".parse().expect("constant");
    let addr = async {
        ha.add_address(bridge.index, gw).await?;
        let found = ha.addresses(Some(bridge.index)).await?;
        if found.iter().any(|x| x.address == gw) {
            Ok("added and read back".to_string())
        } else {
            Err(netns::Error::InvalidInput {
                what: "address",
                value: gw.to_string(),
                reason: "added but not listed".into(),
            })
        }
    }
    .await;
    let have_addr = c.result("addresses", "addresses", addr);
    let on_link = Route::on_link("10.254.0.0/24".parse().expect("constant"), bridge.index);
    let routes = async {
        ha.add_route(&on_link).await?;
        let mut detail = "on-link route added and listed".to_string();
        if !ha
            .routes(false)
            .await?
            .iter()
            .any(|r| r.destination == on_link.destination)
        {
            detail = "on-link route added but not listed".into();
        }
        if let (Some(p), true) = (&peer, have_addr) {
            hb.set_up(p.index, true).await?;
            hb.add_address(p.index, "10.255.0.2/24".parse().expect("constant"))
                .await?;
            hb.add_route(&Route::default_via("10.255.0.1".parse().expect("constant")))
                .await?;
            detail.push_str("; default route via a gateway added");
        }
        Ok::<_, netns::Error>(detail)
    }
    .await;
    let have_routes = c.result("routes", "routes", routes);
    if have_routes {
        match ha.delete_route(&on_link).await {
            Ok(()) => c.add(
                "route_delete",
                "route delete",
                Outcome::Ok,
                "RTM_DELROUTE works",
            ),
            Err(e) => c.add(
                "route_delete",
                "route delete",
                Outcome::Fail,
                format!("{e} (routes go away with their link or namespace)"),
            ),
        }
    } else {
        c.add(
            "route_delete",
            "route delete",
            Outcome::Skip,
            "needs routes",
        );
    }
    let sysctl = netns::read_sysctl(a, "net.ipv4.ip_forward")
        .and_then(|v| netns::write_sysctl(a, "net.ipv4.ip_forward", "1").map(|_| v));
    c.result(
        "sysctl",
        "sysctl net.ipv4.ip_forward",
        sysctl.map(|v| format!("read ({v}) and written inside a namespace")),
    );
}

/// Run a program inside `ns` (the child inherits the namespace of the
/// thread that forks it) and report its stderr on failure.
fn run_in(ns: &Netns, program: &str, args: &[&str]) -> Result<String, String> {
    let out = ns
        .run(|| {
            Command::new(program)
                .args(args)
                .stdin(Stdio::null())
                .output()
        })
        .map_err(|e| e.to_string())?;
    match out {
        Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).to_string()),
        Ok(o) => Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("; ")
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(format!("{program} is not installed"))
        }
        Err(e) => Err(format!("{program}: {e}")),
    }
}

fn probe_tun(c: &mut Checks) {
    let r = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun");
    c.result(
        "tun",
        "/dev/net/tun",
        r.map(|_| "opened read-write".to_string()),
    );
}

/// Where Docker listens: DOCKER_HOST (unix:// only) or the default socket.
pub fn docker_socket() -> PathBuf {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"))
}

async fn probe_docker(c: &mut Checks) {
    let socket = docker_socket();
    if !socket.exists() {
        c.add(
            "docker",
            "Docker daemon",
            Outcome::Fail,
            format!("no socket at {}", socket.display()),
        );
        return;
    }
    let client = crate::api::client::Client::new(&socket);
    let answer = tokio::time::timeout(
        std::time::Duration::from_secs(3),
        client.get::<serde_json::Value>("/version"),
    )
    .await;
    match answer {
        Ok(Ok(v)) => c.add(
            "docker",
            "Docker daemon",
            Outcome::Ok,
            format!(
                "{} answers: version {}, API {}",
                socket.display(),
                v["Version"].as_str().unwrap_or("?"),
                v["ApiVersion"].as_str().unwrap_or("?")
            ),
        ),
        Ok(Err(e)) => c.add("docker", "Docker daemon", Outcome::Fail, e.to_string()),
        Err(_) => c.add(
            "docker",
            "Docker daemon",
            Outcome::Fail,
            format!("{} did not answer within 3 s", socket.display()),
        ),
    }
}

fn probe_preload(c: &mut Checks) {
    let found = crate::preload_setup::find_library();
    let in_ld_preload = std::fs::read_to_string("/etc/ld.so.preload")
        .map(|s| s.contains("libconductor_preload"))
        .unwrap_or(false);
    match found {
        Some(p) => c.add(
            "preload",
            "preload library",
            Outcome::Ok,
            format!(
                "{}{}",
                p.display(),
                if in_ld_preload {
                    " (listed in /etc/ld.so.preload)"
                } else {
                    ""
                }
            ),
        ),
        None => c.add(
            "preload",
            "preload library",
            Outcome::Fail,
            format!(
                "libconductor_preload.so not installed (looked in {})",
                crate::preload_setup::candidates()
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_lists_every_check() {
        let r = Report {
            platform: Platform {
                kind: "kernel".into(),
                release: "6.18".into(),
                evidence: "x".into(),
                runsc: None,
            },
            checks: vec![Check {
                id: "tun".into(),
                title: "/dev/net/tun".into(),
                outcome: Outcome::Fail,
                detail: "ENOENT".into(),
            }],
        };
        let t = r.table();
        assert!(t.contains("platform: kernel"));
        assert!(t.contains("/dev/net/tun  no"), "{t}");
        assert!(!r.works("tun"));
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["checks"][0]["outcome"], "fail");
    }
}
