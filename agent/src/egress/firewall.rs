//! The firewall the backends share: which iptables flavour, and one
//! save -> plan -> restore transaction per family at a time.

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::error::EgressError;
use super::ruleset::{self, NetworkRules, Saved, Script};
use super::runner::CommandRunner;
use super::Family;

/// The iptables flavour. Both take the same rules; `Nft` (nf_tables, what
/// Debian's `iptables` and Docker use on a real kernel) is preferred where
/// it works, `Legacy` (x_tables) is the only one gVisor has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tool {
    Legacy,
    Nft,
}

impl Tool {
    pub fn name(self) -> &'static str {
        match self {
            Tool::Legacy => "iptables-legacy",
            Tool::Nft => "iptables-nft",
        }
    }

    fn program(self, family: Family, what: &str) -> String {
        let base = match family {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        };
        let flavour = match self {
            Tool::Legacy => "legacy",
            Tool::Nft => "nft",
        };
        format!("{base}-{flavour}{what}")
    }

    /// `iptables-legacy`, `ip6tables-nft`, ...
    pub fn command(self, family: Family) -> String {
        self.program(family, "")
    }

    pub fn save(self, family: Family) -> String {
        self.program(family, "-save")
    }

    pub fn restore(self, family: Family) -> String {
        self.program(family, "-restore")
    }
}

/// The firewall: a tool, whether its IPv6 half works, and a lock so that
/// two transactions never interleave their save and restore.
pub struct Firewall<R> {
    runner: R,
    tool: Tool,
    ipv6: bool,
    lock: Mutex<()>,
}

impl<R: CommandRunner> Firewall<R> {
    /// `ipv6`: whether ip6tables of this flavour works here. Without it no
    /// backend can keep IPv6 from bypassing it, so they refuse networks
    /// with an IPv6 subnet.
    pub fn new(runner: R, tool: Tool, ipv6: bool) -> Self {
        Firewall {
            runner,
            tool,
            ipv6,
            lock: Mutex::new(()),
        }
    }

    pub fn tool(&self) -> Tool {
        self.tool
    }

    pub fn ipv6(&self) -> bool {
        self.ipv6
    }

    pub fn runner(&self) -> &R {
        &self.runner
    }

    fn families(&self) -> &'static [Family] {
        if self.ipv6 {
            &[Family::V4, Family::V6]
        } else {
            &[Family::V4]
        }
    }

    /// What the firewall holds now in our tables, in one family. Each table
    /// is asked for by name: without `-t`, iptables-save lists the tables in
    /// /proc/net/ip_tables_names, which gVisor does not have (it prints
    /// nothing there).
    pub async fn saved(&self, family: Family) -> Result<Saved, EgressError> {
        let mut text = String::new();
        for table in ["filter", "nat"] {
            let out = self
                .runner
                .run(&self.tool.save(family), &["-t", table], None)
                .await?;
            text.push_str(&out.stdout);
        }
        Ok(Saved::parse(&text))
    }

    async fn commit(&self, family: Family, script: &Script) -> Result<(), EgressError> {
        if script.is_empty() {
            return Ok(());
        }
        let input = script.render();
        tracing::debug!(family = family.name(), %input, "firewall transaction");
        self.runner
            .run(
                &self.tool.restore(family),
                &["--noflush", "--wait", "10"],
                Some(&input),
            )
            .await
            .map(drop)
    }

    /// Make the network's chains hold exactly these rules: `v4`, and `v6`
    /// when the firewall has IPv6 (`v6` with rules on a firewall without
    /// IPv6 is refused).
    pub async fn apply_network(
        &self,
        bridge: &str,
        v4: &NetworkRules,
        v6: &NetworkRules,
    ) -> Result<(), EgressError> {
        if !self.ipv6 && !v6.is_empty() {
            return Err(EgressError::Unsupported {
                backend: "any",
                reason: format!(
                    "{} does not work here, so IPv6 from bridge {bridge} could not be kept from bypassing the backend",
                    self.tool.command(Family::V6)
                ),
            });
        }
        let _guard = self.lock.lock().await;
        for &family in self.families() {
            let rules = if family == Family::V4 { v4 } else { v6 };
            let saved = self.saved(family).await?;
            self.commit(family, &ruleset::plan_network(&saved, bridge, rules))
                .await?;
        }
        Ok(())
    }

    /// Remove the network's chains in every family.
    pub async fn remove_network(&self, bridge: &str) -> Result<(), EgressError> {
        let _guard = self.lock.lock().await;
        for &family in self.families() {
            let saved = self.saved(family).await?;
            self.commit(family, &ruleset::plan_remove_network(&saved, bridge))
                .await?;
        }
        Ok(())
    }

    /// Remove every chain of ours, in every family.
    pub async fn remove_all(&self) -> Result<(), EgressError> {
        let _guard = self.lock.lock().await;
        for &family in self.families() {
            let saved = self.saved(family).await?;
            self.commit(family, &ruleset::plan_remove_all(&saved))
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::egress::runner::{Call, Output, ScriptedRunner};

    /// One table's section of an iptables-save text.
    fn section(saved: &str, table: &str) -> String {
        let mut out = String::new();
        let mut on = false;
        for line in saved.lines() {
            if let Some(t) = line.strip_prefix('*') {
                on = t == table;
            }
            if on {
                out.push_str(line);
                out.push('\n');
            }
            if line == "COMMIT" {
                on = false;
            }
        }
        out
    }

    /// A runner that answers `*-save -t TABLE` with that table of `saved`
    /// (per family) and accepts every restore.
    pub fn runner(saved_v4: &'static str, saved_v6: &'static str) -> ScriptedRunner {
        ScriptedRunner::new(move |call: &Call| {
            let stdout = if call.program.ends_with("-save") {
                let saved = if call.program.starts_with("ip6") {
                    saved_v6
                } else {
                    saved_v4
                };
                section(saved, call.args.get(1).map_or("", String::as_str))
            } else {
                String::new()
            };
            Ok(Output { stdout })
        })
    }

    #[test]
    fn tool_programs() {
        assert_eq!(Tool::Legacy.save(Family::V6), "ip6tables-legacy-save");
        assert_eq!(Tool::Nft.restore(Family::V4), "iptables-nft-restore");
        assert_eq!(Tool::Nft.command(Family::V6), "ip6tables-nft");
    }

    #[tokio::test]
    async fn saves_per_table_and_one_restore_per_family() {
        let fw = Firewall::new(runner("", ""), Tool::Legacy, true);
        let v4 = NetworkRules {
            forward: vec!["-i br0 ! -o br0 -j DROP".into()],
            ..Default::default()
        };
        fw.apply_network("br0", &v4, &v4).await.unwrap();
        let calls = fw.runner().calls();
        let programs: Vec<(&str, Vec<String>)> = calls
            .iter()
            .map(|c| (c.program.as_str(), c.args.clone()))
            .collect();
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let restore = args(&["--noflush", "--wait", "10"]);
        assert_eq!(
            programs,
            vec![
                ("iptables-legacy-save", args(&["-t", "filter"])),
                ("iptables-legacy-save", args(&["-t", "nat"])),
                ("iptables-legacy-restore", restore.clone()),
                ("ip6tables-legacy-save", args(&["-t", "filter"])),
                ("ip6tables-legacy-save", args(&["-t", "nat"])),
                ("ip6tables-legacy-restore", restore),
            ]
        );
    }

    #[tokio::test]
    async fn nothing_to_do_runs_no_restore() {
        let fw = Firewall::new(runner("", ""), Tool::Nft, true);
        fw.remove_all().await.unwrap();
        fw.remove_network("br0").await.unwrap();
        assert!(fw
            .runner()
            .calls()
            .iter()
            .all(|c| c.program.ends_with("-save")));
    }

    #[tokio::test]
    async fn ipv6_rules_without_ip6tables_are_refused() {
        let fw = Firewall::new(runner("", ""), Tool::Legacy, false);
        let v6 = NetworkRules {
            forward: vec!["-i br0 ! -o br0 -j DROP".into()],
            ..Default::default()
        };
        let e = fw
            .apply_network("br0", &NetworkRules::default(), &v6)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("ip6tables-legacy") && e.contains("br0"), "{e}");
        assert!(fw.runner().calls().is_empty());
    }
}
