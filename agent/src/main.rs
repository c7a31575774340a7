//! conductor-netd: the daemon and its CLI (see the library for everything).

fn main() {
    std::process::exit(conductor_netd::cli::main_with_args(std::env::args_os()));
}
