//! `conductor-netd preload`: where the library is and how to start dockerd
//! with it.

use std::path::PathBuf;

use clap::Args;

use super::{print_json, Result};
use crate::preload_setup::{self, PreloadSetup};

#[derive(Debug, Args)]
pub struct PreloadArgs {
    /// The dockerd to run (default: `dockerd` found on PATH).
    #[arg(long, value_name = "PATH")]
    pub dockerd: Option<PathBuf>,
    /// Arguments for dockerd, after `--`.
    #[arg(last = true, value_name = "DOCKERD_ARGS")]
    pub dockerd_args: Vec<String>,
}

pub fn run(args: PreloadArgs, json: bool) -> Result<()> {
    let library = preload_setup::locate_library()?;
    let dockerd = args.dockerd.unwrap_or_else(preload_setup::find_dockerd);
    let setup = PreloadSetup::new(&library, &dockerd, &args.dockerd_args)?;
    if json {
        return print_json(&setup);
    }
    print!("{}", setup.text());
    Ok(())
}
