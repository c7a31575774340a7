//! Docker's own firewall rules, which dockerd leaves behind when it stops
//! (its chains, the jumps to them, the MASQUERADE of its subnets, the
//! FORWARD policy it set to DROP). Where `docker up` let Docker manage
//! iptables (a real kernel), `docker down` removes them, so nothing is left.

use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

/// The FORWARD policies before dockerd started, per tool, to put back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Baseline {
    pub forward_policy: Vec<(String, String)>,
}

/// The tools Docker drives (Debian's `iptables` is the nft flavour).
const TOOLS: &[&str] = &["iptables", "ip6tables"];

fn save(tool: &str) -> Option<String> {
    let out = Command::new(format!("{tool}-save"))
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn forward_policy(saved: &str) -> Option<String> {
    let mut in_filter = false;
    for line in saved.lines() {
        if line.starts_with('*') {
            in_filter = line == "*filter";
        } else if in_filter {
            if let Some(rest) = line.strip_prefix(":FORWARD ") {
                return rest.split_whitespace().next().map(str::to_string);
            }
        }
    }
    None
}

/// Remember what dockerd may change.
pub fn baseline() -> Baseline {
    Baseline {
        forward_policy: TOOLS
            .iter()
            .filter_map(|t| Some((t.to_string(), forward_policy(&save(t)?)?)))
            .collect(),
    }
}

/// The `iptables-restore --noflush` script that removes Docker's rules from
/// a saved ruleset: rules that jump to a DOCKER* chain or name one of
/// Docker's bridges, then the DOCKER* chains themselves, and the FORWARD
/// policy put back to `policy`.
pub fn removal_script(saved: &str, bridges: &[String], policy: Option<&str>) -> String {
    let mut out = String::new();
    let mut table: Option<String> = None;
    let mut deletes = Vec::new();
    let mut chains = Vec::new();
    let mut forward_policy = None;
    let flush = |out: &mut String,
                 table: &Option<String>,
                 deletes: &mut Vec<String>,
                 chains: &mut Vec<String>,
                 fp: &mut Option<String>| {
        let Some(t) = table else { return };
        if deletes.is_empty() && chains.is_empty() && fp.is_none() {
            return;
        }
        out.push_str(&format!("*{t}\n"));
        for d in deletes.drain(..) {
            out.push_str(&d);
            out.push('\n');
        }
        for c in chains.iter() {
            out.push_str(&format!("-F {c}\n"));
        }
        for c in chains.drain(..) {
            out.push_str(&format!("-X {c}\n"));
        }
        if let Some(p) = fp.take() {
            out.push_str(&format!("-P FORWARD {p}\n"));
        }
        out.push_str("COMMIT\n");
    };
    let names_bridge = |rule: &str| {
        let words: Vec<&str> = rule.split_whitespace().collect();
        words
            .windows(2)
            .any(|w| matches!(w[0], "-i" | "-o") && bridges.iter().any(|b| b == w[1]))
    };
    for line in saved.lines() {
        if let Some(t) = line.strip_prefix('*') {
            flush(
                &mut out,
                &table,
                &mut deletes,
                &mut chains,
                &mut forward_policy,
            );
            table = Some(t.to_string());
        } else if let Some(decl) = line.strip_prefix(':') {
            let name = decl.split_whitespace().next().unwrap_or_default();
            if name.starts_with("DOCKER") {
                chains.push(name.to_string());
            } else if name == "FORWARD" && table.as_deref() == Some("filter") {
                let current = decl.split_whitespace().nth(1).unwrap_or_default();
                if let Some(p) = policy.filter(|p| *p != current) {
                    forward_policy = Some(p.to_string());
                }
            }
        } else if let Some(rule) = line.strip_prefix("-A ") {
            let chain = rule.split_whitespace().next().unwrap_or_default();
            if chain.starts_with("DOCKER") {
                continue; // goes with its chain
            }
            let jumps_to_docker = rule
                .split_whitespace()
                .collect::<Vec<_>>()
                .windows(2)
                .any(|w| matches!(w[0], "-j" | "-g") && w[1].starts_with("DOCKER"));
            if jumps_to_docker || names_bridge(rule) {
                deletes.push(format!("-D {rule}"));
            }
        } else if line == "COMMIT" {
            flush(
                &mut out,
                &table,
                &mut deletes,
                &mut chains,
                &mut forward_policy,
            );
            table = None;
        }
    }
    out
}

/// Remove Docker's rules (after dockerd stopped); the failures, as text.
pub fn remove(bridges: &[String], baseline: &Baseline) -> Vec<String> {
    let mut failures = Vec::new();
    for tool in TOOLS {
        let Some(saved) = save(tool) else { continue };
        let policy = baseline
            .forward_policy
            .iter()
            .find(|(t, _)| t == tool)
            .map(|(_, p)| p.as_str());
        let script = removal_script(&saved, bridges, policy);
        if script.is_empty() {
            continue;
        }
        let run = Command::new(format!("{tool}-restore"))
            .arg("--noflush")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                if let Some(mut stdin) = child.stdin.take() {
                    stdin.write_all(script.as_bytes())?;
                }
                child.wait_with_output()
            });
        match run {
            Ok(o) if o.status.success() => {}
            Ok(o) => failures.push(format!(
                "{tool}-restore: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => failures.push(format!("{tool}-restore: {e}")),
        }
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAVED: &str = "\
*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-A POSTROUTING -s 10.1.0.0/24 -j MASQUERADE
-A DOCKER -i docker0 -j RETURN
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:DOCKER-USER - [0:0]
-A FORWARD -j DOCKER-USER
-A FORWARD -o docker0 -j ACCEPT
-A FORWARD -i eth0 -j ACCEPT
-A DOCKER-USER -j RETURN
COMMIT
";

    #[test]
    fn only_dockers_rules_are_removed_and_the_policy_restored() {
        let script = removal_script(SAVED, &["docker0".to_string()], Some("ACCEPT"));
        assert_eq!(
            script,
            "*nat\n\
             -D PREROUTING -m addrtype --dst-type LOCAL -j DOCKER\n\
             -D POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE\n\
             -F DOCKER\n-X DOCKER\nCOMMIT\n\
             *filter\n\
             -D FORWARD -j DOCKER-USER\n\
             -D FORWARD -o docker0 -j ACCEPT\n\
             -F DOCKER-USER\n-X DOCKER-USER\n\
             -P FORWARD ACCEPT\nCOMMIT\n"
        );
        assert_eq!(forward_policy(SAVED).as_deref(), Some("DROP"));
    }

    #[test]
    fn nothing_of_dockers_means_no_script() {
        let clean = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n-A FORWARD -i eth0 -j ACCEPT\nCOMMIT\n";
        assert_eq!(
            removal_script(clean, &["docker0".into()], Some("ACCEPT")),
            ""
        );
    }
}
