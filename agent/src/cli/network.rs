//! `conductor-netd network create|ls|inspect|rm`.

use clap::Subcommand;

use super::{network_segment, print_json, Result};
use crate::api::types::CreateNetwork;
use crate::api::Client;
use crate::render;

#[derive(Debug, Subcommand)]
pub enum NetworkCmd {
    /// Create a network.
    Create {
        name: String,
        /// IPv4 subnet (default: a free /24 from the pool).
        #[arg(long, value_name = "CIDR")]
        subnet: Option<String>,
        /// Gateway address (default: the subnet's first host).
        #[arg(long, value_name = "IP")]
        gateway: Option<String>,
        #[arg(long, value_name = "N")]
        mtu: Option<u32>,
        #[arg(long, value_name = "CIDR")]
        ipv6_subnet: Option<String>,
        /// Bridge name (default: derived from the network name).
        #[arg(long, value_name = "IFNAME")]
        bridge: Option<String>,
        /// No egress: traffic stays on the bridge (names still resolve).
        #[arg(long)]
        internal: bool,
    },
    /// List networks.
    Ls,
    /// Show one network.
    Inspect { name: String },
    /// Remove a network.
    Rm {
        name: String,
        /// Detach its endpoints first.
        #[arg(long)]
        force: bool,
    },
}

pub async fn run(client: &Client, cmd: NetworkCmd, json: bool) -> Result<()> {
    match cmd {
        NetworkCmd::Create {
            name,
            subnet,
            gateway,
            mtu,
            ipv6_subnet,
            bridge,
            internal,
        } => {
            let req = CreateNetwork {
                name,
                subnet,
                gateway,
                mtu,
                ipv6_subnet,
                bridge,
                internal,
            };
            let net = client.create_network(&req).await?;
            if json {
                return print_json(&net);
            }
            println!(
                "created network {} (bridge {}, subnet {}, gateway {})",
                net.network.name, net.network.bridge, net.network.subnet, net.network.gateway
            );
        }
        NetworkCmd::Ls => {
            let nets = client.networks().await?;
            if json {
                return print_json(&nets);
            }
            print!("{}", render::networks_table(&nets));
        }
        NetworkCmd::Inspect { name } => {
            let name = network_segment(&name)?;
            let net = client.network(name).await?;
            let eps = client.network_endpoints(name).await?;
            if json {
                return print_json(&serde_json::json!({"network": net, "endpoints": eps}));
            }
            print!("{}", render::network_detail(&net, &eps));
        }
        NetworkCmd::Rm { name, force } => {
            let r = client
                .remove_network(network_segment(&name)?, force)
                .await?;
            if json {
                return print_json(&r);
            }
            let detached = if r.detached > 0 {
                format!(" (detached {} endpoint(s))", r.detached)
            } else {
                String::new()
            };
            println!("removed network {}{detached}", r.removed);
        }
    }
    Ok(())
}
