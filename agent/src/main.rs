use clap::Parser;

/// conductor-net's privileged daemon and CLI.
#[derive(Parser)]
#[command(name = "conductor-netd", version)]
struct Cli {}

fn main() {
    let _ = Cli::parse();
}
