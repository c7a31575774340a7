//! `conductor-netd attach|detach|endpoints`.

use std::path::PathBuf;

use clap::Args;

use super::{network_segment, print_json, Result};
use crate::api::types::{AttachRequest, DetachRequest};
use crate::api::Client;
use crate::render;

#[derive(Debug, Args)]
#[group(id = "target", required = true, multiple = false)]
pub struct TargetArgs {
    /// A named network namespace (under /run/netns).
    #[arg(long, group = "target", value_name = "NAME")]
    pub netns: Option<String>,
    /// A network namespace file.
    #[arg(long, group = "target", value_name = "PATH")]
    pub netns_path: Option<PathBuf>,
    /// The network namespace of a process.
    #[arg(long, group = "target", value_name = "PID")]
    pub pid: Option<i32>,
    /// A running Docker container (name or id), found through Docker at
    /// DOCKER_HOST: its namespace (SandboxKey, else /proc/PID/ns/net).
    #[arg(long, group = "target", value_name = "NAME|ID")]
    pub container: Option<String>,
}

impl TargetArgs {
    /// The namespace path and pid the request names (a container resolved).
    async fn resolve(self) -> Result<(Option<String>, Option<PathBuf>, Option<i32>)> {
        let Some(name) = self.container else {
            return Ok((self.netns, self.netns_path, self.pid));
        };
        let docker = crate::workers::connect_env().await?;
        let c = crate::workers::container_netns(&docker, &name).await?;
        Ok(match c.sandbox {
            Some(path) => (None, Some(path), None),
            None => (None, None, Some(c.pid)),
        })
    }
}

#[derive(Debug, Args)]
pub struct AttachArgs {
    pub network: String,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Interface name inside the namespace (default eth0).
    #[arg(long, value_name = "IF")]
    pub ifname: Option<String>,
    /// IPv4 address (default: the next free one).
    #[arg(long, value_name = "ADDR")]
    pub ip: Option<String>,
    /// Do not add a default route via the gateway.
    #[arg(long)]
    pub no_default_route: bool,
}

#[derive(Debug, Args)]
pub struct DetachArgs {
    pub network: String,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Answer once the detach is recorded; the veth is deleted in the
    /// background (its address stays reserved until then).
    #[arg(long)]
    pub no_wait: bool,
}

pub async fn attach(client: &Client, args: AttachArgs, json: bool) -> Result<()> {
    let network = network_segment(&args.network)?.to_string();
    let (netns, netns_path, pid) = args.target.resolve().await?;
    let req = AttachRequest {
        netns,
        netns_path,
        pid,
        ifname: args.ifname,
        ip: args.ip,
        default_route: args.no_default_route.then_some(false),
    };
    let r = client.attach(&network, &req).await?;
    if json {
        return print_json(&r);
    }
    println!("{}", render::attach_line(&r));
    Ok(())
}

pub async fn detach(client: &Client, args: DetachArgs, json: bool) -> Result<()> {
    let network = network_segment(&args.network)?.to_string();
    let (netns, netns_path, pid) = args.target.resolve().await?;
    let req = DetachRequest {
        netns,
        netns_path,
        pid,
        wait: args.no_wait.then_some(false),
    };
    let r = client.detach(&network, &req).await?;
    if json {
        return print_json(&r);
    }
    match (r.detached, &r.id) {
        (true, Some(id)) if r.pending => {
            println!("detaching endpoint {id} (finishing in the background)")
        }
        (true, Some(id)) => println!("detached endpoint {id}"),
        _ => println!("not attached; nothing to do"),
    }
    Ok(())
}

pub async fn list(client: &Client, network: Option<&str>, json: bool) -> Result<()> {
    let eps = match network {
        Some(n) => client.network_endpoints(network_segment(n)?).await?,
        None => client.endpoints().await?,
    };
    if json {
        return print_json(&eps);
    }
    print!("{}", render::endpoints_table(&eps));
    Ok(())
}
