//! The command line: one file per subcommand group; the binary is
//! `main_with_args`. Exit codes: 0 success, 2 usage, and one per error
//! class (`error::exit`: 3 invalid input, 4 not found, 5 conflict,
//! 6 permission, 7 daemon unreachable, 8 unsupported or not installed,
//! 1 anything else).

mod api;
mod demo;
mod docker;
mod doctor;
mod endpoints;
mod network;
mod policy;
mod ports;
mod preload;
mod serve;
mod status;
mod worker;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use serde::Serialize;

use crate::api::{Client, ClientError};
use crate::config::{DEFAULT_SOCKET, SOCKET_ENV};
use crate::error::{exit, Error, ErrorClass};

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
    Serve(serve::ServeArgs),
    /// Create, list, inspect and remove networks.
    #[command(subcommand)]
    Network(network::NetworkCmd),
    /// Attach a network namespace to a network.
    Attach(endpoints::AttachArgs),
    /// Detach a network namespace from a network.
    Detach(endpoints::DetachArgs),
    /// List endpoints (of one network, or all).
    Endpoints { network: Option<String> },
    /// The daemon and a tree network -> bridge -> endpoints.
    Status,
    /// Probe what works on this machine (no daemon needed).
    Doctor,
    /// Run a self-contained demonstration in throwaway namespaces.
    Demo(demo::DemoArgs),
    /// Docker that works here: `docker up` / `docker down` / `docker ls`.
    #[command(subcommand)]
    Docker(docker::DockerCmd),
    /// Print the installed preload library and the exact line to start
    /// dockerd with it (and the systemd drop-in).
    Preload(preload::PreloadArgs),
    /// A network's egress policy: `policy set|show|add|rm|reset|stats`.
    #[command(subcommand)]
    Policy(policy::PolicyCmd),
    /// Send one raw request to the API and print the answer's body (exit by
    /// the HTTP error's class). For debugging and tests.
    Api(api::ApiArgs),
    /// Published ports, forwarded by netd in userspace.
    #[command(subcommand)]
    Port(ports::PortCmd),
    /// Workers: containers sharing a parent container's network namespace
    /// (talks to Docker at DOCKER_HOST directly).
    #[command(subcommand)]
    Worker(worker::WorkerCmd),
}

/// What a command can fail with: the service's errors (local commands) or
/// the client's (commands that ask the daemon).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Service(#[from] Error),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Worker(#[from] crate::workers::WorkerError),
    /// A foreground worker (or exec) ended with this code; it becomes ours.
    #[error("exited with status {0}")]
    Exit(i32),
}

impl CliError {
    pub fn class(&self) -> ErrorClass {
        match self {
            CliError::Service(e) => e.class(),
            CliError::Client(e) => e.class(),
            CliError::Worker(e) => e.class(),
            CliError::Exit(_) => ErrorClass::Internal,
        }
    }
}

pub type Result<T, E = CliError> = std::result::Result<T, E>;

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
                    exit::OK
                }
                _ => exit::USAGE,
            };
        }
    };
    match run(cli) {
        Ok(()) => exit::OK,
        Err(CliError::Exit(code)) => code,
        Err(e) => {
            eprintln!("conductor-netd: {e}");
            e.class().exit_code()
        }
    }
}

pub fn run(cli: Cli) -> Result<()> {
    let json = cli.json;
    let client = || {
        Client::new(
            cli.socket
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET)),
        )
    };
    match cli.command {
        Command::Serve(args) => serve::run(args, cli.socket.clone()),
        Command::Doctor => doctor::run(json),
        Command::Demo(args) => demo::run(args),
        Command::Preload(args) => preload::run(args, json),
        Command::Network(cmd) => block_on(network::run(&client(), cmd, json)),
        Command::Attach(args) => block_on(endpoints::attach(&client(), args, json)),
        Command::Detach(args) => block_on(endpoints::detach(&client(), args, json)),
        Command::Endpoints { network } => {
            block_on(endpoints::list(&client(), network.as_deref(), json))
        }
        Command::Status => block_on(status::run(&client(), json)),
        Command::Docker(cmd) => block_on(docker::run(&client(), cmd, json)),
        Command::Api(args) => block_on(api::run(&client(), args)),
        Command::Policy(cmd) => block_on(policy::run(&client(), cmd, json)),
        Command::Port(cmd) => block_on(ports::run(&client(), cmd, json)),
        Command::Worker(cmd) => block_on(worker::run(cmd, json)),
    }
}

/// Client commands run on a small single-threaded runtime.
fn block_on<F: std::future::Future<Output = Result<()>>>(work: F) -> Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(format!("start the runtime: {e}")))?
        .block_on(work)
}

fn print_json<T: Serialize>(value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::Internal(format!("encode output: {e}")))?;
    println!("{text}");
    Ok(())
}

/// Network names are checked before they go into a URL, so a bad one is
/// reported by value instead of as a 404.
fn network_segment(name: &str) -> Result<&str> {
    crate::model::validate_network_name(name)?;
    Ok(name)
}

#[cfg(test)]
mod tests;
