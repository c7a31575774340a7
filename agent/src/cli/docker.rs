//! `conductor-netd docker up|down|ls`.

use std::path::PathBuf;

use clap::Subcommand;

use super::{print_json, Result};
use crate::api::Client;
use crate::docker::{self, UpRequest};
use crate::error::Error;

#[derive(Debug, Subcommand)]
pub enum DockerCmd {
    /// Start a dockerd that works on this machine (chosen from what
    /// `doctor` finds), with conductor-netd serving names and egress for its
    /// networks where Docker cannot; prints the plan and DOCKER_HOST.
    Up {
        /// The dockerd to run (default: `dockerd` on PATH).
        #[arg(long, value_name = "PATH")]
        dockerd: Option<PathBuf>,
        /// Docker's data root (default /var/lib/docker for the default
        /// socket).
        #[arg(long, value_name = "DIR")]
        data_root: Option<PathBuf>,
        /// Docker's API socket (default: DOCKER_HOST, else
        /// /var/run/docker.sock). conductor-netd's own is --socket.
        #[arg(long, value_name = "PATH")]
        docker_socket: Option<PathBuf>,
        /// Print the plan and start nothing.
        #[arg(long)]
        dry_run: bool,
        /// More arguments for dockerd, after `--`.
        #[arg(last = true, value_name = "DOCKERD_ARGS")]
        dockerd_args: Vec<String>,
    },
    /// Stop the dockerd `docker up` started and undo everything it did.
    Down {
        #[arg(long, value_name = "PATH")]
        docker_socket: Option<PathBuf>,
    },
    /// The Docker daemons conductor-netd serves, their networks and egress.
    Ls,
}

pub async fn run(client: &Client, cmd: DockerCmd, json: bool) -> Result<()> {
    match cmd {
        DockerCmd::Up {
            dockerd,
            data_root,
            docker_socket,
            dry_run,
            dockerd_args,
        } => {
            crate::privileges::require()?;
            let req = UpRequest {
                dockerd,
                data_root,
                docker_socket: docker_socket.unwrap_or_else(docker::default_socket),
                extra_args: dockerd_args,
                dry_run,
                netd_socket: client.socket().to_path_buf(),
                netd_bin: std::env::current_exe()
                    .map_err(|e| Error::Internal(format!("own path: {e}")))?,
            };
            let outcome = docker::up(req, |text| {
                if !json {
                    print!("{text}");
                }
            })
            .await?;
            if json {
                return print_json(&outcome);
            }
            if outcome.started {
                println!(
                    "dockerd is up (pid {}). Use it with:\n  export DOCKER_HOST={}",
                    outcome.pid.unwrap_or_default(),
                    outcome.docker_host
                );
            }
        }
        DockerCmd::Down { docker_socket } => {
            crate::privileges::require()?;
            let socket = docker_socket.unwrap_or_else(docker::default_socket);
            let done = docker::down(&socket).await?;
            if json {
                return print_json(&done);
            }
            for line in done {
                println!("{line}");
            }
        }
        DockerCmd::Ls => {
            let engines = client.docker_engines().await?;
            if json {
                return print_json(&engines);
            }
            print!("{}", crate::render::docker_engines(&engines));
        }
    }
    Ok(())
}
