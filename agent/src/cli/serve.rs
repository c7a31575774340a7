//! `conductor-netd serve`.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::Result;
use crate::daemon::{self, ServeOptions};

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
    /// Serve the `*.localhost` reverse proxy here (e.g. 127.0.0.1:8000).
    #[arg(long, value_name = "ADDR:PORT")]
    pub localhost_proxy: Option<std::net::SocketAddr>,
    /// Serve Docker's network plugin (`docker network create -d conductor`)
    /// on this socket; Docker finds it at /run/docker/plugins/conductor.sock.
    #[arg(long, value_name = "SOCKET", num_args = 0..=1, default_missing_value = crate::plugin::DEFAULT_SOCKET)]
    pub docker_plugin: Option<std::path::PathBuf>,
    /// Keep links in memory instead of the kernel (tests; no privileges).
    #[cfg(feature = "testing")]
    #[arg(long, hide = true)]
    pub fake_kernel: bool,
}

pub fn run(args: ServeArgs, socket: Option<PathBuf>) -> Result<()> {
    init_logging(args.log_format, &args.log_level);
    daemon::serve(ServeOptions {
        config: args.config,
        socket,
        state_dir: args.state_dir,
        #[cfg(feature = "testing")]
        fake_kernel: args.fake_kernel,
        no_probe: args.no_probe,
        localhost_proxy: args.localhost_proxy,
        docker_plugin: args.docker_plugin,
    })?;
    Ok(())
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
