//! `conductor-netd policy set|show|add|rm|reset|stats`: a network's egress
//! policy. Rules are one argument each (`"deny *.example.com"`), or one a
//! line from `--file` (blank lines and `#` comments skipped).

use std::path::PathBuf;

use clap::Subcommand;

use super::{print_json, Result};
use crate::api::types::{PolicyView, SetPolicy};
use crate::api::Client;
use crate::error::Error;
use crate::policy::{store::check_network, Preset};

#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Replace a network's policy: a preset and rules.
    Set {
        network: String,
        /// open (default), balanced or locked.
        #[arg(long, default_value = "open")]
        preset: String,
        /// Rules: `allow|deny DOMAIN|*.DOMAIN|ADDRESS[/LEN]|port N[-M]`.
        rules: Vec<String>,
        /// Read (more) rules from a file, one a line.
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
    },
    /// Show one network's policy, or every network's.
    Show { network: Option<String> },
    /// Append rules.
    Add {
        network: String,
        #[arg(required = true)]
        rules: Vec<String>,
    },
    /// Remove rules.
    Rm {
        network: String,
        #[arg(required = true)]
        rules: Vec<String>,
    },
    /// Back to open with no rules.
    Reset { network: String },
    /// Decisions counted: allowed, denied, DNS allowed and refused, and
    /// which rules denied.
    Stats { network: Option<String> },
}

fn network(name: &str) -> Result<&str> {
    check_network(name).map_err(Error::from)?;
    Ok(name)
}

fn read_rules(path: &PathBuf) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::invalid("rules file", path.display(), e.to_string()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect())
}

fn show(v: &PolicyView) {
    println!("network {}: preset {}", v.network, v.spec.preset.as_str());
    for r in &v.spec.rules {
        println!("  {r}");
    }
}

fn stats(v: &PolicyView) {
    let s = &v.stats;
    println!(
        "network {}: allowed {} denied {} dns_allowed {} dns_refused {}",
        v.network, s.allowed, s.denied, s.dns_allowed, s.dns_refused
    );
    for (rule, n) in &s.denied_by_rule {
        println!("  {n:>8}  {rule}");
    }
}

pub async fn run(client: &Client, cmd: PolicyCmd, json: bool) -> Result<()> {
    let counting = matches!(cmd, PolicyCmd::Stats { .. });
    let one = match cmd {
        PolicyCmd::Set {
            network: n,
            preset,
            mut rules,
            file,
        } => {
            let preset: Preset = preset
                .parse()
                .map_err(|e: String| Error::invalid("preset", &preset, e))?;
            if let Some(f) = &file {
                rules.extend(read_rules(f)?);
            }
            client
                .set_policy(network(&n)?, &SetPolicy { preset, rules })
                .await?
        }
        PolicyCmd::Show { network: Some(n) } | PolicyCmd::Stats { network: Some(n) } => {
            client.policy(network(&n)?).await?
        }
        PolicyCmd::Show { network: None } | PolicyCmd::Stats { network: None } => {
            let all = client.policies().await?;
            if json {
                return print_json(&all);
            }
            for v in &all {
                if counting {
                    stats(v)
                } else {
                    show(v)
                }
            }
            return Ok(());
        }
        PolicyCmd::Add { network: n, rules } => {
            client.add_policy_rules(network(&n)?, &rules).await?
        }
        PolicyCmd::Rm { network: n, rules } => {
            client.remove_policy_rules(network(&n)?, &rules).await?
        }
        PolicyCmd::Reset { network: n } => client.reset_policy(network(&n)?).await?,
    };
    if json {
        print_json(&one)
    } else {
        if counting {
            stats(&one)
        } else {
            show(&one)
        }
        Ok(())
    }
}
