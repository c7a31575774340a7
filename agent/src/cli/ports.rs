//! `conductor-netd port add|rm|ls`.

use clap::{Args, Subcommand};

use super::{print_json, Result};
use crate::api::types::PortRequest;
use crate::api::Client;
use crate::ports::{HostSide, PortView};

#[derive(Debug, Subcommand)]
pub enum PortCmd {
    /// Publish a host port: `[HOST_ADDR:]HOST_PORT:PORT[/tcp|/udp]` (host
    /// address default 127.0.0.1, IPv6 in brackets), forwarded by netd.
    Add(AddArgs),
    /// Stop publishing `[HOST_ADDR:]HOST_PORT[/tcp|/udp]`.
    Rm { port: String },
    /// The published ports.
    Ls,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false, id = "target")]
pub struct Target {
    /// A Docker container's name (followed when it restarts).
    #[arg(long, group = "target", value_name = "NAME")]
    container: Option<String>,
    /// The endpoint attached with `--netns NAME`.
    #[arg(long, group = "target", value_name = "NAME")]
    netns: Option<String>,
    /// An endpoint id.
    #[arg(long, group = "target", value_name = "ID")]
    endpoint: Option<String>,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    #[command(flatten)]
    target: Target,
    /// `[HOST_ADDR:]HOST_PORT:PORT[/tcp|/udp]`
    mapping: String,
}

pub async fn run(client: &Client, cmd: PortCmd, json: bool) -> Result<()> {
    match cmd {
        PortCmd::Add(a) => {
            let req = PortRequest {
                container: a.target.container,
                netns: a.target.netns,
                endpoint: a.target.endpoint,
                mapping: a.mapping,
            };
            // Checked here too: a typo is a usage error before any request.
            req.spec()?;
            let view = client.add_port(&req).await?;
            if json {
                return print_json(&view);
            }
            println!("{}", line(&view));
        }
        PortCmd::Rm { port } => {
            let side = HostSide::parse(&port)?;
            let view = client.remove_port(&side.id()).await?;
            if json {
                return print_json(&view);
            }
            println!("removed {}", view.id);
        }
        PortCmd::Ls => {
            let views = client.ports().await?;
            if json {
                return print_json(&views);
            }
            println!(
                "{:<28} {:<24} {:<6} {:<18} STATE",
                "HOST", "TARGET", "PORT", "ADDRESS"
            );
            for v in &views {
                println!("{}", line(v));
            }
        }
    }
    Ok(())
}

fn line(v: &PortView) -> String {
    let state = match (&v.error, v.listening) {
        (Some(e), _) => format!("error: {e}"),
        (None, true) => "listening".into(),
        (None, false) => "down".into(),
    };
    format!(
        "{:<28} {:<24} {:<6} {:<18} {state}",
        v.id,
        v.spec.target.describe(),
        v.spec.port,
        v.address.as_deref().unwrap_or("-"),
    )
}
