//! The kernel's NAT, as the egress backends would use it: iptables-legacy
//! SNAT, MASQUERADE and REDIRECT, and nftables. Each rule is added inside a
//! throwaway namespace (it dies with it), and the table shows the exact
//! rule tried: gVisor, for one, takes SNAT only with a protocol.

use std::process::{Command, Stdio};

use netns::Netns;

use super::{CheckId, Checks};

pub(super) const CHECKS: [CheckId; 4] = [
    CheckId::IptablesSnat,
    CheckId::IptablesMasquerade,
    CheckId::IptablesRedirect,
    CheckId::Nftables,
];

const SNAT: &[&str] = &[
    "-t",
    "nat",
    "-A",
    "POSTROUTING",
    "-s",
    "10.254.0.0/24",
    "-p",
    "tcp",
    "-j",
    "SNAT",
    "--to-source",
    "10.255.0.1",
];
const MASQUERADE: &[&str] = &[
    "-t",
    "nat",
    "-A",
    "POSTROUTING",
    "-s",
    "10.254.0.0/24",
    "-j",
    "MASQUERADE",
];
const REDIRECT: &[&str] = &[
    "-t",
    "nat",
    "-A",
    "PREROUTING",
    "-s",
    "10.254.0.0/24",
    "-p",
    "tcp",
    "-j",
    "REDIRECT",
    "--to-ports",
    "15001",
];

pub(super) fn probe(c: &mut Checks, ns: &Netns) {
    for (id, rule) in [
        (CheckId::IptablesSnat, SNAT),
        (CheckId::IptablesMasquerade, MASQUERADE),
        (CheckId::IptablesRedirect, REDIRECT),
    ] {
        let mut args = vec!["-w"];
        args.extend_from_slice(rule);
        let tried = format!("iptables-legacy {}", rule.join(" "));
        let r = run_in(ns, "iptables-legacy", &args)
            .map(|_| format!("accepted: {tried}"))
            .map_err(|e| format!("refused: {tried}: {e}"));
        c.result(id, r);
    }
    let nft = run_in(ns, "nft", &["add", "table", "ip", "cnd_doctor"])
        .and_then(|_| run_in(ns, "nft", &["list", "ruleset"]));
    c.result(
        CheckId::Nftables,
        nft.map(|_| "table added and ruleset listed".into()),
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
        Ok(o) => Err(String::from_utf8_lossy(&o.stderr)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(format!("{program} is not installed"))
        }
        Err(e) => Err(format!("{program}: {e}")),
    }
}
