//! Our chains, and the pure planning of changes to them: read what
//! `iptables-save` shows, write an `iptables-restore --noflush` input that
//! makes one network's rules exactly what a backend wants (one atomic
//! transaction per family, two process starts instead of dozens).
//!
//! Layout, in each family:
//! ```text
//! nat    PREROUTING  -> CONDUCTOR-EGRESS-PRE  -> CNE-P-<bridge>   (proxy: REDIRECT)
//! nat    POSTROUTING -> CONDUCTOR-EGRESS-POST -> CNE-S-<bridge>   (nat: MASQUERADE / SNAT)
//! filter FORWARD     -> CONDUCTOR-EGRESS-FWD  -> CNE-F-<bridge>   (accept / drop)
//! filter DOCKER-USER -> CONDUCTOR-EGRESS-DU   -> CNE-U-<bridge>   (policy on Docker's NAT)
//! ```
//! The hook jumps go first in the built-in chains (before Docker's). Where
//! Docker does its own NAT (a real kernel) it inserts its forward rules
//! above ours, but jumps to DOCKER-USER before any of them and never
//! flushes it: the egress policy of Docker's networks hooks in there. A
//! network's chain is declared in the restore input, which creates it or
//! flushes it, so re-applying never duplicates a rule; duplicated jumps (a
//! crash between two steps of an older version, a hand edit) are removed.
//! Nothing here matches on comments: gVisor's iptables refuses `-m comment`.

use std::collections::{BTreeMap, BTreeSet};

pub const TOP_PRE: &str = "CONDUCTOR-EGRESS-PRE";
pub const TOP_POST: &str = "CONDUCTOR-EGRESS-POST";
pub const TOP_FWD: &str = "CONDUCTOR-EGRESS-FWD";
pub const TOP_DOCKER_USER: &str = "CONDUCTOR-EGRESS-DU";
/// Per-network chains start with this.
pub const NETWORK_PREFIX: &str = "CNE-";

/// Where a network's rules hook in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Prerouting,
    Postrouting,
    Forward,
    /// Docker's DOCKER-USER chain (it exists while a dockerd manages
    /// iptables).
    DockerUser,
}

impl Hook {
    pub const ALL: [Hook; 4] = [
        Hook::Prerouting,
        Hook::Postrouting,
        Hook::Forward,
        Hook::DockerUser,
    ];

    pub fn table(self) -> &'static str {
        match self {
            Hook::Prerouting | Hook::Postrouting => "nat",
            Hook::Forward | Hook::DockerUser => "filter",
        }
    }

    /// The chain that jumps to ours (built in, or Docker's).
    pub fn builtin(self) -> &'static str {
        match self {
            Hook::Prerouting => "PREROUTING",
            Hook::Postrouting => "POSTROUTING",
            Hook::Forward => "FORWARD",
            Hook::DockerUser => "DOCKER-USER",
        }
    }

    pub fn top(self) -> &'static str {
        match self {
            Hook::Prerouting => TOP_PRE,
            Hook::Postrouting => TOP_POST,
            Hook::Forward => TOP_FWD,
            Hook::DockerUser => TOP_DOCKER_USER,
        }
    }

    /// The network's own chain for this hook.
    pub fn network_chain(self, bridge: &str) -> String {
        let tag = match self {
            Hook::Prerouting => 'P',
            Hook::Postrouting => 'S',
            Hook::Forward => 'F',
            Hook::DockerUser => 'U',
        };
        format!("{NETWORK_PREFIX}{tag}-{bridge}")
    }
}

/// The forward rule that keeps anything from leaving a bridge.
pub fn drop_forwarded(bridge: &str) -> String {
    format!("-i {bridge} ! -o {bridge} -j DROP")
}

/// Is this one of our chains?
pub fn is_ours(chain: &str) -> bool {
    chain.starts_with(NETWORK_PREFIX)
        || [TOP_PRE, TOP_POST, TOP_FWD, TOP_DOCKER_USER].contains(&chain)
}

/// One network's rules in one family, by hook; each rule is the part after
/// `-A CHAIN` (e.g. `-i br0 -p tcp -j REDIRECT --to-ports 15001`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkRules {
    pub prerouting: Vec<String>,
    pub postrouting: Vec<String>,
    pub forward: Vec<String>,
    pub docker_user: Vec<String>,
}

impl NetworkRules {
    pub fn get(&self, hook: Hook) -> &[String] {
        match hook {
            Hook::Prerouting => &self.prerouting,
            Hook::Postrouting => &self.postrouting,
            Hook::Forward => &self.forward,
            Hook::DockerUser => &self.docker_user,
        }
    }

    pub fn is_empty(&self) -> bool {
        Hook::ALL.iter().all(|h| self.get(*h).is_empty())
    }
}

#[derive(Debug, Clone, Default)]
struct TableState {
    chains: BTreeSet<String>,
    /// `-A CHAIN ...` lines, whitespace normalised.
    rules: Vec<String>,
}

/// What `iptables-save` showed, for the tables we use.
#[derive(Debug, Clone, Default)]
pub struct Saved {
    tables: BTreeMap<String, TableState>,
}

fn normalise(line: &str) -> String {
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl Saved {
    pub fn parse(text: &str) -> Saved {
        let mut saved = Saved::default();
        let mut current: Option<String> = None;
        for line in text.lines().map(str::trim) {
            if let Some(table) = line.strip_prefix('*') {
                current = Some(table.to_string());
                saved.tables.entry(table.to_string()).or_default();
            } else if line == "COMMIT" {
                current = None;
            } else if let Some(table) = current.as_ref().and_then(|t| saved.tables.get_mut(t)) {
                if let Some(chain) = line.strip_prefix(':') {
                    if let Some(name) = chain.split_whitespace().next() {
                        table.chains.insert(name.to_string());
                    }
                } else if line.starts_with("-A ") {
                    table.rules.push(normalise(line));
                }
            }
        }
        saved
    }

    pub fn has_chain(&self, table: &str, chain: &str) -> bool {
        self.tables
            .get(table)
            .is_some_and(|t| t.chains.contains(chain))
    }

    /// How many times exactly this `-A ...` rule appears.
    pub fn count(&self, table: &str, rule: &str) -> usize {
        let rule = normalise(rule);
        self.tables
            .get(table)
            .map_or(0, |t| t.rules.iter().filter(|r| **r == rule).count())
    }

    /// The rules of one chain (the part after `-A CHAIN `).
    pub fn chain_rules(&self, table: &str, chain: &str) -> Vec<String> {
        let prefix = format!("-A {chain} ");
        self.tables.get(table).map_or_else(Vec::new, |t| {
            t.rules
                .iter()
                .filter_map(|r| r.strip_prefix(&prefix).map(str::to_string))
                .collect()
        })
    }

    /// Our chains in one table.
    pub fn our_chains(&self, table: &str) -> Vec<String> {
        self.tables.get(table).map_or_else(Vec::new, |t| {
            t.chains.iter().filter(|c| is_ours(c)).cloned().collect()
        })
    }

    /// Every chain and rule of ours, one line each (for tests and status).
    pub fn ours(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, t) in &self.tables {
            for c in t.chains.iter().filter(|c| is_ours(c)) {
                out.push(format!("{name} :{c}"));
            }
            for r in &t.rules {
                let mut words = r.split_whitespace().skip(1);
                let chain = words.next().unwrap_or_default();
                let target = r.split(" -j ").nth(1).and_then(|t| t.split(' ').next());
                if is_ours(chain) || target.is_some_and(is_ours) {
                    out.push(format!("{name} {r}"));
                }
            }
        }
        out
    }

    fn tables(&self) -> impl Iterator<Item = (&String, &TableState)> {
        self.tables.iter()
    }
}

#[derive(Debug, Clone, Default)]
struct Section {
    declare: Vec<String>,
    commands: Vec<String>,
}

/// An `iptables-restore --noflush` input.
#[derive(Debug, Clone, Default)]
pub struct Script {
    tables: BTreeMap<String, Section>,
}

impl Script {
    /// Create the chain, or flush it if it exists.
    pub fn declare(&mut self, table: &str, chain: &str) {
        self.section(table)
            .declare
            .push(format!(":{chain} - [0:0]"));
    }

    pub fn command(&mut self, table: &str, line: String) {
        self.section(table).commands.push(line);
    }

    fn section(&mut self, table: &str) -> &mut Section {
        self.tables.entry(table.to_string()).or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.tables
            .values()
            .all(|s| s.declare.is_empty() && s.commands.is_empty())
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for (table, s) in &self.tables {
            if s.declare.is_empty() && s.commands.is_empty() {
                continue;
            }
            out.push_str(&format!("*{table}\n"));
            for l in s.declare.iter().chain(&s.commands) {
                out.push_str(l);
                out.push('\n');
            }
            out.push_str("COMMIT\n");
        }
        out
    }
}

/// Make exactly `want` jumps of `-A from -j to` (0 or 1); `insert_first`
/// puts a missing one at the top of `from`.
fn fix_jump(
    saved: &Saved,
    script: &mut Script,
    table: &str,
    from: &str,
    to: &str,
    want: usize,
    insert_first: bool,
) {
    let have = saved.count(table, &format!("-A {from} -j {to}"));
    for _ in want..have {
        script.command(table, format!("-D {from} -j {to}"));
    }
    if have < want {
        if insert_first {
            script.command(table, format!("-I {from} 1 -j {to}"));
        } else {
            script.command(table, format!("-A {from} -j {to}"));
        }
    }
}

/// Remove a network chain: its jumps, its rules, itself; and the top chain
/// with its hook jump when no other network uses it any more. A rule is
/// never deleted twice in one transaction (iptables-nft-restore then fails
/// the chain's deletion with EBUSY): a top chain that goes is flushed
/// instead of having its jump deleted first.
fn remove_chain(saved: &Saved, script: &mut Script, hook: Hook, chain: &str) {
    let table = hook.table();
    if !saved.has_chain(table, chain) {
        return;
    }
    let top = hook.top();
    let top_goes = saved
        .chain_rules(table, top)
        .iter()
        .all(|r| *r == format!("-j {chain}"));
    if top_goes {
        fix_jump(saved, script, table, hook.builtin(), top, 0, false);
        if saved.has_chain(table, top) {
            script.command(table, format!("-F {top}"));
        }
    } else {
        fix_jump(saved, script, table, top, chain, 0, false);
    }
    script.command(table, format!("-F {chain}"));
    script.command(table, format!("-X {chain}"));
    if top_goes && saved.has_chain(table, top) {
        script.command(table, format!("-X {top}"));
    }
}

/// Make a network's chains hold exactly `rules` (hooks with no rules lose
/// their chain).
pub fn plan_network(saved: &Saved, bridge: &str, rules: &NetworkRules) -> Script {
    let mut script = Script::default();
    for hook in Hook::ALL {
        let chain = hook.network_chain(bridge);
        let table = hook.table();
        let wanted = rules.get(hook);
        if wanted.is_empty() {
            remove_chain(saved, &mut script, hook, &chain);
            continue;
        }
        if !saved.has_chain(table, hook.top()) {
            script.declare(table, hook.top());
        }
        fix_jump(
            saved,
            &mut script,
            table,
            hook.builtin(),
            hook.top(),
            1,
            true,
        );
        script.declare(table, &chain);
        for r in wanted {
            script.command(table, format!("-A {chain} {r}"));
        }
        fix_jump(saved, &mut script, table, hook.top(), &chain, 1, false);
    }
    script
}

/// Remove one network's chains.
pub fn plan_remove_network(saved: &Saved, bridge: &str) -> Script {
    let mut script = Script::default();
    for hook in Hook::ALL {
        remove_chain(saved, &mut script, hook, &hook.network_chain(bridge));
    }
    script
}

/// Remove every chain of ours and every rule elsewhere that jumps to one.
pub fn plan_remove_all(saved: &Saved) -> Script {
    let mut script = Script::default();
    for (table, state) in saved.tables() {
        let ours: Vec<&String> = state.chains.iter().filter(|c| is_ours(c)).collect();
        if ours.is_empty() {
            continue;
        }
        for rule in &state.rules {
            let mut words = rule.split_whitespace().skip(1);
            let chain = words.next().unwrap_or_default();
            let target = rule.split(" -j ").nth(1).and_then(|t| t.split(' ').next());
            if !is_ours(chain) && target.is_some_and(is_ours) {
                script.command(table, format!("-D {}", &rule[3..]));
            }
        }
        for c in &ours {
            script.command(table, format!("-F {c}"));
        }
        for c in &ours {
            script.command(table, format!("-X {c}"));
        }
    }
    script
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAVED: &str = "\
# Generated by iptables-save v1.8.9
*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:CONDUCTOR-EGRESS-PRE - [0:0]
:CNE-P-br0 - [0:0]
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A PREROUTING -j CONDUCTOR-EGRESS-PRE
-A PREROUTING -j CONDUCTOR-EGRESS-PRE
-A CONDUCTOR-EGRESS-PRE -j CNE-P-br0
-A CNE-P-br0 -i br0 -p tcp -j REDIRECT --to-ports 15001
COMMIT
*filter
:FORWARD DROP [0:0]
:CONDUCTOR-EGRESS-FWD - [0:0]
:CNE-F-br0 - [0:0]
:CNE-F-old - [0:0]
-A FORWARD -j CONDUCTOR-EGRESS-FWD
-A CONDUCTOR-EGRESS-FWD -j CNE-F-br0
-A CONDUCTOR-EGRESS-FWD  -j CNE-F-old
-A CNE-F-br0 -i br0 ! -o br0 -j DROP
COMMIT
";

    #[test]
    fn saved_output_is_parsed() {
        let s = Saved::parse(SAVED);
        assert!(s.has_chain("nat", "CNE-P-br0"));
        assert!(!s.has_chain("nat", "CNE-S-br0"));
        assert_eq!(s.count("nat", "-A PREROUTING -j CONDUCTOR-EGRESS-PRE"), 2);
        assert_eq!(s.count("filter", "-A CONDUCTOR-EGRESS-FWD -j CNE-F-old"), 1);
        assert_eq!(
            s.chain_rules("nat", "CNE-P-br0"),
            vec!["-i br0 -p tcp -j REDIRECT --to-ports 15001"]
        );
        assert_eq!(
            s.our_chains("filter"),
            vec!["CNE-F-br0", "CNE-F-old", "CONDUCTOR-EGRESS-FWD"]
        );
    }

    #[test]
    fn a_fresh_network_gets_top_chains_hooks_and_its_own_chains() {
        let rules = NetworkRules {
            postrouting: vec!["-s 10.1.0.0/24 ! -d 10.1.0.0/24 -j MASQUERADE".into()],
            forward: vec!["-i br1 ! -o br1 -j ACCEPT".into()],
            ..Default::default()
        };
        let script = plan_network(&Saved::default(), "br1", &rules).render();
        assert_eq!(
            script,
            "\
*filter
:CONDUCTOR-EGRESS-FWD - [0:0]
:CNE-F-br1 - [0:0]
-I FORWARD 1 -j CONDUCTOR-EGRESS-FWD
-A CNE-F-br1 -i br1 ! -o br1 -j ACCEPT
-A CONDUCTOR-EGRESS-FWD -j CNE-F-br1
COMMIT
*nat
:CONDUCTOR-EGRESS-POST - [0:0]
:CNE-S-br1 - [0:0]
-I POSTROUTING 1 -j CONDUCTOR-EGRESS-POST
-A CNE-S-br1 -s 10.1.0.0/24 ! -d 10.1.0.0/24 -j MASQUERADE
-A CONDUCTOR-EGRESS-POST -j CNE-S-br1
COMMIT
"
        );
    }

    #[test]
    fn docker_networks_hook_into_docker_user() {
        let rules = NetworkRules {
            prerouting: vec![
                "-i br-1 -p udp --dport 53 -j DNAT --to-destination 172.18.0.1:53".into(),
            ],
            docker_user: vec!["-i br-1 ! -o br-1 -d 203.0.113.10/32 -j DROP".into()],
            ..Default::default()
        };
        let script = plan_network(&Saved::default(), "br-1", &rules).render();
        assert!(
            script.contains(
                ":CONDUCTOR-EGRESS-DU - [0:0]\n:CNE-U-br-1 - [0:0]\n-I DOCKER-USER 1 -j CONDUCTOR-EGRESS-DU\n"
            ),
            "{script}"
        );
        assert!(
            script.contains("-A CONDUCTOR-EGRESS-DU -j CNE-U-br-1\n"),
            "{script}"
        );
        assert!(!script.contains("FORWARD"), "{script}");
        let saved = Saved::parse(
            "*filter\n:DOCKER-USER - [0:0]\n:CONDUCTOR-EGRESS-DU - [0:0]\n:CNE-U-br-1 - [0:0]\n\
             -A DOCKER-USER -j CONDUCTOR-EGRESS-DU\n-A DOCKER-USER -j RETURN\n\
             -A CONDUCTOR-EGRESS-DU -j CNE-U-br-1\nCOMMIT\n",
        );
        let removed = plan_remove_network(&saved, "br-1").render();
        assert_eq!(
            removed,
            "*filter\n-D DOCKER-USER -j CONDUCTOR-EGRESS-DU\n-F CONDUCTOR-EGRESS-DU\n\
             -F CNE-U-br-1\n-X CNE-U-br-1\n-X CONDUCTOR-EGRESS-DU\nCOMMIT\n"
        );
    }

    #[test]
    fn reapplying_rebuilds_without_duplicates_and_drops_unused_chains() {
        // br0 had proxy rules (P and F) and a duplicated hook jump; now it
        // gets only a forward rule.
        let rules = NetworkRules {
            forward: vec!["-i br0 ! -o br0 -j DROP".into()],
            ..Default::default()
        };
        let script = plan_network(&Saved::parse(SAVED), "br0", &rules).render();
        assert_eq!(
            script,
            "\
*filter
:CNE-F-br0 - [0:0]
-A CNE-F-br0 -i br0 ! -o br0 -j DROP
COMMIT
*nat
-D PREROUTING -j CONDUCTOR-EGRESS-PRE
-D PREROUTING -j CONDUCTOR-EGRESS-PRE
-F CONDUCTOR-EGRESS-PRE
-F CNE-P-br0
-X CNE-P-br0
-X CONDUCTOR-EGRESS-PRE
COMMIT
"
        );
        // The duplicated PREROUTING jump goes when the hook is used again.
        let proxy = NetworkRules {
            prerouting: vec!["-i br0 -p tcp -j REDIRECT --to-ports 15001".into()],
            ..Default::default()
        };
        let script = plan_network(&Saved::parse(SAVED), "br0", &proxy).render();
        assert!(
            script.contains("-D PREROUTING -j CONDUCTOR-EGRESS-PRE\n"),
            "{script}"
        );
        assert!(!script.contains("-I PREROUTING"), "{script}");
        assert!(
            !script.contains("-A CONDUCTOR-EGRESS-PRE -j CNE-P-br0"),
            "{script}"
        );
    }

    #[test]
    fn removing_a_network_leaves_the_others() {
        // CNE-F-old still hangs off CONDUCTOR-EGRESS-FWD, which stays; the
        // nat top chain served br0 only and goes with it.
        let script = plan_remove_network(&Saved::parse(SAVED), "br0").render();
        assert_eq!(
            script,
            "\
*filter
-D CONDUCTOR-EGRESS-FWD -j CNE-F-br0
-F CNE-F-br0
-X CNE-F-br0
COMMIT
*nat
-D PREROUTING -j CONDUCTOR-EGRESS-PRE
-D PREROUTING -j CONDUCTOR-EGRESS-PRE
-F CONDUCTOR-EGRESS-PRE
-F CNE-P-br0
-X CNE-P-br0
-X CONDUCTOR-EGRESS-PRE
COMMIT
"
        );
        assert!(plan_remove_network(&Saved::default(), "br0").is_empty());
    }

    #[test]
    fn removing_everything_removes_every_jump_and_chain_of_ours_only() {
        let script = plan_remove_all(&Saved::parse(SAVED)).render();
        assert_eq!(
            script,
            "\
*filter
-D FORWARD -j CONDUCTOR-EGRESS-FWD
-F CNE-F-br0
-F CNE-F-old
-F CONDUCTOR-EGRESS-FWD
-X CNE-F-br0
-X CNE-F-old
-X CONDUCTOR-EGRESS-FWD
COMMIT
*nat
-D PREROUTING -j CONDUCTOR-EGRESS-PRE
-D PREROUTING -j CONDUCTOR-EGRESS-PRE
-F CNE-P-br0
-F CONDUCTOR-EGRESS-PRE
-X CNE-P-br0
-X CONDUCTOR-EGRESS-PRE
COMMIT
"
        );
        assert!(plan_remove_all(&Saved::default()).is_empty());
    }
}
