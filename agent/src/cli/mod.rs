//! The command line. Exit codes: 0 success, 1 error, 2 usage.

pub mod output;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

use crate::api::client::Client;
use crate::config::{DEFAULT_SOCKET, SOCKET_ENV};
use crate::daemon::{self, ServeOptions};
use crate::error::{Error, Result};
use crate::model::{
    AttachRequest, AttachResponse, CreateNetwork, DetachRequest, DetachResponse, EndpointView,
    NetworkView, RemoveResponse, Status,
};

pub const EXIT_OK: i32 = 0;
pub const EXIT_ERROR: i32 = 1;
pub const EXIT_USAGE: i32 = 2;

/// conductor-net's privileged daemon and its CLI.
#[derive(Debug, Parser)]
#[command(name = "conductor-netd", version, propagate_version = true)]
pub struct Cli {
    /// The daemon's API socket.
    #[arg(long, global = true, env = SOCKET_ENV, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (as root).
    Serve(ServeArgs),
    /// Create, list, inspect and remove networks.
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Attach a network namespace to a network.
    Attach(AttachArgs),
    /// Detach a network namespace from a network.
    Detach(DetachArgs),
    /// List endpoints (of one network, or all).
    Endpoints { network: Option<String> },
    /// The daemon and a tree network -> bridge -> endpoints.
    Status,
    /// Probe what works on this machine (no daemon needed).
    Doctor,
    /// Run a self-contained demonstration in throwaway namespaces.
    Demo(DemoArgs),
    /// Print the installed preload library and the exact line to start
    /// dockerd with it (and the systemd drop-in).
    Preload(PreloadArgs),
    /// Send one raw request to the API and print the answer's body (exit 1
    /// on an HTTP error status). For debugging and tests.
    Api(ApiArgs),
}

#[derive(Debug, Args)]
pub struct PreloadArgs {
    /// The dockerd to run (default: `dockerd` found on PATH).
    #[arg(long, value_name = "PATH")]
    pub dockerd: Option<PathBuf>,
    /// Arguments for dockerd, after `--`.
    #[arg(last = true, value_name = "DOCKERD_ARGS")]
    pub dockerd_args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ApiArgs {
    /// GET, POST, DELETE, ...
    pub method: String,
    /// e.g. /v1/status
    pub path: String,
    /// Request body.
    #[arg(long, conflicts_with = "data_file")]
    pub data: Option<String>,
    /// Request body from a file ("-" for stdin).
    #[arg(long, value_name = "FILE")]
    pub data_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// State directory (default /var/lib/conductor-netd).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Configuration file (TOML; default /etc/conductor-netd/config.toml if present).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "human")]
    pub log_format: LogFormat,
    /// Log level filter (tracing syntax), e.g. info, debug.
    #[arg(long, default_value = "info", env = "CONDUCTOR_NETD_LOG")]
    pub log_level: String,
    /// Skip the start-up environment probe.
    #[arg(long)]
    pub no_probe: bool,
    /// Keep links in memory instead of the kernel (tests; no privileges).
    #[arg(long, hide = true)]
    pub fake_kernel: bool,
}

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

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the daemon's log on stderr.
    #[arg(long)]
    pub verbose: bool,
}

fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Parse `args` and run; returns the exit code.
pub fn main_with_args<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    EXIT_OK
                }
                _ => EXIT_USAGE,
            };
        }
    };
    match run(cli) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("conductor-netd: {e}");
            EXIT_ERROR
        }
    }
}

fn socket_of(cli: &Cli) -> PathBuf {
    cli.socket
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

fn client_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(format!("start the runtime: {e}")))
}

fn print_json<T: Serialize>(value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::Internal(format!("encode output: {e}")))?;
    println!("{text}");
    Ok(())
}

fn target_request(t: &TargetArgs) -> (Option<String>, Option<PathBuf>, Option<i32>) {
    (t.netns.clone(), t.netns_path.clone(), t.pid)
}

/// Path segment check: network names are validated before they go into a
/// URL, so a bad one is reported by value instead of as a 404.
fn network_segment(name: &str) -> Result<&str> {
    crate::model::validate_network_name(name)?;
    Ok(name)
}

pub fn run(cli: Cli) -> Result<()> {
    let json = cli.json;
    let socket = socket_of(&cli);
    match cli.command {
        Command::Serve(args) => {
            init_logging(args.log_format, &args.log_level);
            daemon::serve(ServeOptions {
                config: args.config,
                socket: cli.socket,
                state_dir: args.state_dir,
                fake_kernel: args.fake_kernel,
                no_probe: args.no_probe,
            })
        }
        Command::Doctor => {
            let report = crate::doctor::run();
            if json {
                print_json(&report)
            } else {
                print!("{}", report.table());
                Ok(())
            }
        }
        Command::Demo(args) => crate::demo::run(args.verbose),
        Command::Preload(args) => {
            let library = crate::preload_setup::locate_library()?;
            let dockerd = args
                .dockerd
                .unwrap_or_else(crate::preload_setup::find_dockerd);
            let setup =
                crate::preload_setup::PreloadSetup::new(&library, &dockerd, &args.dockerd_args)?;
            if json {
                print_json(&setup)
            } else {
                print!("{}", setup.text());
                Ok(())
            }
        }
        command => {
            let client = Client::new(socket);
            client_runtime()?.block_on(client_command(&client, command, json))
        }
    }
}

async fn client_command(client: &Client, command: Command, json: bool) -> Result<()> {
    match command {
        Command::Network(NetworkCmd::Create {
            name,
            subnet,
            gateway,
            mtu,
            ipv6_subnet,
            bridge,
        }) => {
            let req = CreateNetwork {
                name,
                subnet,
                gateway,
                mtu,
                ipv6_subnet,
                bridge,
            };
            let (_, net): (u16, NetworkView) =
                client.call("POST", "/v1/networks", Some(&req)).await?;
            if json {
                print_json(&net)
            } else {
                println!(
                    "created network {} (bridge {}, subnet {}, gateway {})",
                    net.network.name, net.network.bridge, net.network.subnet, net.network.gateway
                );
                Ok(())
            }
        }
        Command::Network(NetworkCmd::Ls) => {
            let nets: Vec<NetworkView> = client.get("/v1/networks").await?;
            if json {
                print_json(&nets)
            } else {
                print!("{}", output::networks_table(&nets));
                Ok(())
            }
        }
        Command::Network(NetworkCmd::Inspect { name }) => {
            let path = format!("/v1/networks/{}", network_segment(&name)?);
            let net: NetworkView = client.get(&path).await?;
            let eps: Vec<EndpointView> = client.get(&format!("{path}/endpoints")).await?;
            if json {
                print_json(&serde_json::json!({"network": net, "endpoints": eps}))
            } else {
                print!("{}", output::network_detail(&net, &eps));
                Ok(())
            }
        }
        Command::Network(NetworkCmd::Rm { name, force }) => {
            let path = format!(
                "/v1/networks/{}{}",
                network_segment(&name)?,
                if force { "?force=true" } else { "" }
            );
            let (_, r): (u16, RemoveResponse) = client.call("DELETE", &path, None::<&()>).await?;
            if json {
                print_json(&r)
            } else {
                println!(
                    "removed network {}{}",
                    r.removed,
                    if r.detached > 0 {
                        format!(" (detached {} endpoint(s))", r.detached)
                    } else {
                        String::new()
                    }
                );
                Ok(())
            }
        }
        Command::Attach(args) => {
            let (netns, netns_path, pid) = target_request(&args.target);
            let req = AttachRequest {
                netns,
                netns_path,
                pid,
                ifname: args.ifname,
                ip: args.ip,
                default_route: if args.no_default_route {
                    Some(false)
                } else {
                    None
                },
            };
            let path = format!("/v1/networks/{}/endpoints", network_segment(&args.network)?);
            let (_, r): (u16, AttachResponse) = client.call("POST", &path, Some(&req)).await?;
            if json {
                print_json(&r)
            } else {
                println!("{}", output::attach_line(&r));
                Ok(())
            }
        }
        Command::Detach(args) => {
            let (netns, netns_path, pid) = target_request(&args.target);
            let req = DetachRequest {
                netns,
                netns_path,
                pid,
                wait: if args.no_wait { Some(false) } else { None },
            };
            let path = format!("/v1/networks/{}/detach", network_segment(&args.network)?);
            let (_, r): (u16, DetachResponse) = client.call("POST", &path, Some(&req)).await?;
            if json {
                print_json(&r)
            } else {
                match (&r.detached, &r.id) {
                    (true, Some(id)) if r.pending => {
                        println!("detaching endpoint {id} (finishing in the background)")
                    }
                    (true, Some(id)) => println!("detached endpoint {id}"),
                    _ => println!("not attached; nothing to do"),
                }
                Ok(())
            }
        }
        Command::Endpoints { network } => {
            let path = match &network {
                Some(n) => format!("/v1/networks/{}/endpoints", network_segment(n)?),
                None => "/v1/endpoints".to_string(),
            };
            let eps: Vec<EndpointView> = client.get(&path).await?;
            if json {
                print_json(&eps)
            } else {
                print!("{}", output::endpoints_table(&eps));
                Ok(())
            }
        }
        Command::Status => {
            let status: Status = client.get("/v1/status").await?;
            if json {
                print_json(&status)
            } else {
                print!("{}", output::status_tree(&status));
                Ok(())
            }
        }
        Command::Api(args) => {
            let body = match (args.data, args.data_file) {
                (Some(d), _) => Some(d.into_bytes()),
                (None, Some(f)) if f.as_os_str() == "-" => {
                    let mut buf = Vec::new();
                    std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
                        .map_err(|e| Error::Client(format!("read stdin: {e}")))?;
                    Some(buf)
                }
                (None, Some(f)) => Some(
                    std::fs::read(&f)
                        .map_err(|e| Error::Client(format!("read {}: {e}", f.display())))?,
                ),
                (None, None) => None,
            };
            let reply = client
                .raw(&args.method.to_uppercase(), &args.path, body)
                .await?;
            println!("{}", String::from_utf8_lossy(&reply.body));
            if reply.status >= 400 {
                return Err(Error::Client(format!("HTTP {}", reply.status)));
            }
            Ok(())
        }
        Command::Serve(_) | Command::Doctor | Command::Demo(_) | Command::Preload(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn usage_errors_exit_2_and_help_exits_0() {
        assert_eq!(main_with_args(["conductor-netd", "--help"]), EXIT_OK);
        assert_eq!(main_with_args(["conductor-netd", "frobnicate"]), EXIT_USAGE);
        assert_eq!(
            main_with_args(["conductor-netd", "attach", "n"]),
            EXIT_USAGE
        );
        assert_eq!(
            main_with_args([
                "conductor-netd",
                "attach",
                "n",
                "--netns",
                "a",
                "--pid",
                "3"
            ]),
            EXIT_USAGE
        );
        assert_eq!(
            main_with_args(["conductor-netd", "network", "create", "n", "--mtu", "big"]),
            EXIT_USAGE
        );
    }

    #[test]
    fn spellings_from_the_issue_parse() {
        for args in [
            vec![
                "serve",
                "--socket",
                "/s",
                "--state-dir",
                "/d",
                "--config",
                "/c",
            ],
            vec![
                "network",
                "create",
                "n",
                "--subnet",
                "10.0.0.0/24",
                "--gateway",
                "10.0.0.1",
                "--mtu",
                "1400",
                "--ipv6-subnet",
                "fd00::/64",
            ],
            vec!["network", "ls", "--json"],
            vec!["network", "inspect", "n"],
            vec!["network", "rm", "n", "--force"],
            vec![
                "attach", "n", "--netns", "a", "--ifname", "eth1", "--ip", "10.0.0.5", "--json",
            ],
            vec!["attach", "n", "--netns-path", "/proc/1/ns/net"],
            vec!["attach", "n", "--pid", "42"],
            vec!["detach", "n", "--pid", "42"],
            vec!["endpoints"],
            vec!["endpoints", "n", "--json"],
            vec!["status", "--json"],
            vec!["doctor", "--json"],
            vec!["--socket", "/x", "status"],
        ] {
            let mut full = vec!["conductor-netd"];
            full.extend(args.iter());
            Cli::try_parse_from(&full).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        }
    }
}
