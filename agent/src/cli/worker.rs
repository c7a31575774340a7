//! `conductor-netd worker ...`: thin over `crate::workers`, talking to
//! Docker (DOCKER_HOST) directly.

use std::collections::HashMap;

use clap::{Args, Subcommand};

use super::{print_json, CliError, Result};
use crate::workers::{self, WorkerSpec};

#[derive(Debug, Subcommand)]
pub enum WorkerCmd {
    /// Start a worker in its parent's network namespace (in the foreground
    /// unless --detach; removed on exit unless --keep).
    Spawn(SpawnArgs),
    /// Run a worker in the foreground like `docker run -i --rm`: streams
    /// its output, forwards signals, exits with its exit code.
    Run(RunArgs),
    /// List workers (found by label).
    Ls {
        #[arg(long, value_name = "PARENT")]
        parent: Option<String>,
    },
    /// How many workers are running.
    Count {
        #[arg(long, value_name = "PARENT")]
        parent: Option<String>,
    },
    /// Stop a worker.
    Stop { name: String },
    /// Stop every running worker (of one parent).
    StopAll {
        #[arg(long, value_name = "PARENT")]
        parent: Option<String>,
    },
    /// A worker's output.
    Logs {
        name: String,
        /// Follow new output.
        #[arg(short, long)]
        follow: bool,
    },
    /// Run a command in a worker.
    Exec {
        name: String,
        /// Keep stdin open.
        #[arg(short, long)]
        interactive: bool,
        /// Allocate a TTY.
        #[arg(short, long)]
        tty: bool,
        #[arg(last = true, required = true, value_name = "CMD")]
        cmd: Vec<String>,
    },
    /// Parents, their workers, states and exit codes.
    Status {
        #[arg(long, value_name = "PARENT")]
        parent: Option<String>,
    },
    /// Parent containers.
    #[command(subcommand)]
    Parent(ParentCmd),
}

#[derive(Debug, Subcommand)]
pub enum ParentCmd {
    /// Create and start a container that holds a network namespace for
    /// workers.
    Create {
        name: String,
        /// A Docker network for it (default: Docker's default bridge).
        #[arg(long, value_name = "NET")]
        network: Option<String>,
        #[arg(long, value_name = "IMAGE", default_value = "busybox:latest")]
        image: String,
    },
}

#[derive(Debug, Args)]
pub struct CommonSpawn {
    /// The parent container (name or id); it must be running.
    #[arg(long, value_name = "PARENT")]
    pub parent: String,
    /// The image (default: the parent's).
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,
    /// Bind mounts SRC:DST[:ro].
    #[arg(short = 'v', long = "volume", value_name = "SRC:DST[:ro]")]
    pub volumes: Vec<String>,
    /// Environment K=V.
    #[arg(short = 'e', long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// CPUs, e.g. 1.5 (a negative value is read, then refused by name).
    #[arg(long, value_name = "X", allow_negative_numbers = true)]
    pub cpus: Option<String>,
    /// Memory limit, e.g. 512m.
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// Keep the container after it exits.
    #[arg(long)]
    pub keep: bool,
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// The command (default: the image's).
    #[arg(last = true, value_name = "CMD")]
    pub cmd: Vec<String>,
}

#[derive(Debug, Args)]
pub struct SpawnArgs {
    #[command(flatten)]
    pub common: CommonSpawn,
    /// Start it and return (print its name).
    #[arg(short, long)]
    pub detach: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub common: CommonSpawn,
    /// Pipe stdin to the worker.
    #[arg(short, long)]
    pub interactive: bool,
}

/// Flags parsed and checked before Docker is asked anything.
pub fn spec(c: CommonSpawn, stdin: bool) -> Result<WorkerSpec> {
    let w = |e: workers::WorkerError| CliError::Worker(e);
    Ok(WorkerSpec {
        volumes: c
            .volumes
            .iter()
            .map(|v| workers::Volume::parse(v))
            .collect::<Result<_, _>>()
            .map_err(w)?,
        env: c
            .env
            .iter()
            .map(|e| workers::parse_env(e))
            .collect::<Result<_, _>>()
            .map_err(w)?,
        nano_cpus: c
            .cpus
            .as_deref()
            .map(workers::parse_cpus)
            .transpose()
            .map_err(w)?,
        memory: c
            .memory
            .as_deref()
            .map(workers::parse_memory)
            .transpose()
            .map_err(w)?,
        name: match c.name {
            Some(n) => {
                workers::validate_name(&n).map_err(w)?;
                Some(n)
            }
            None => None,
        },
        parent: c.parent,
        image: c.image,
        keep: c.keep,
        cmd: c.cmd,
        stdin,
    })
}

pub async fn run(cmd: WorkerCmd, json: bool) -> Result<()> {
    // Flags are checked first: a bad one is reported even without Docker.
    match cmd {
        WorkerCmd::Spawn(a) => {
            let spec = spec(a.common, false)?;
            let docker = workers::connect_env().await?;
            if !a.detach {
                return exit_with(workers::run(&docker, &spec).await?);
            }
            let c = workers::spawn_detached(&docker, &spec).await?;
            if json {
                return print_json(&c);
            }
            println!("{}", c.name);
            Ok(())
        }
        WorkerCmd::Run(a) => {
            let spec = spec(a.common, a.interactive)?;
            let docker = workers::connect_env().await?;
            exit_with(workers::run(&docker, &spec).await?)
        }
        other => manage(&workers::connect_env().await?, other, json).await,
    }
}

async fn manage(docker: &bollard::Docker, cmd: WorkerCmd, json: bool) -> Result<()> {
    let docker = docker.clone();
    match cmd {
        WorkerCmd::Spawn(_) | WorkerCmd::Run(_) => return unreachable_spawn(),
        WorkerCmd::Ls { parent } => {
            let ws = workers::list(&docker, parent.as_deref(), false).await?;
            if json {
                return print_json(&ws);
            }
            print!("{}", workers::workers_table(&ws));
        }
        WorkerCmd::Count { parent } => {
            let n = workers::list(&docker, parent.as_deref(), true).await?.len();
            if json {
                return print_json(&serde_json::json!({ "running": n }));
            }
            println!("{n}");
        }
        WorkerCmd::Stop { name } => {
            workers::stop(&docker, &name).await?;
            if json {
                return print_json(&serde_json::json!({ "stopped": [name] }));
            }
            println!("{name}");
        }
        WorkerCmd::StopAll { parent } => {
            let names = workers::stop_all(&docker, parent.as_deref()).await?;
            if json {
                return print_json(&serde_json::json!({ "stopped": names }));
            }
            for n in names {
                println!("{n}");
            }
        }
        WorkerCmd::Logs { name, follow } => workers::logs(&docker, &name, follow).await?,
        WorkerCmd::Exec {
            name,
            interactive,
            tty,
            cmd,
        } => return exit_with(workers::exec(&docker, &name, &cmd, interactive, tty).await?),
        WorkerCmd::Status { parent } => {
            let s = workers::status(&docker, parent.as_deref()).await?;
            if json {
                return print_json(&s);
            }
            print!("{}", workers::status_text(&s));
        }
        WorkerCmd::Parent(ParentCmd::Create {
            name,
            network,
            image,
        }) => {
            let id =
                workers::create_parent(&docker, &name, network.as_deref(), &image, HashMap::new())
                    .await?;
            if json {
                return print_json(&serde_json::json!({ "id": id, "name": name }));
            }
            println!("{id}");
        }
    }
    Ok(())
}

/// Spawn and run are handled before a Docker client is made.
fn unreachable_spawn() -> Result<()> {
    Err(CliError::Service(crate::error::Error::Internal(
        "spawn/run reached the management commands".into(),
    )))
}

/// The worker's own exit code becomes ours.
fn exit_with(code: i32) -> Result<()> {
    if code == 0 {
        Ok(())
    } else {
        Err(CliError::Exit(code))
    }
}
