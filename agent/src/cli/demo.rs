//! `conductor-netd demo`.

use clap::Args;

use super::Result;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the daemon's log on stderr.
    #[arg(long)]
    pub verbose: bool,
}

pub fn run(args: DemoArgs) -> Result<()> {
    Ok(crate::demo::run(args.verbose)?)
}
