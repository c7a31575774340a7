//! CLI parsing and exit codes.

use super::*;
use clap::CommandFactory;

#[test]
fn the_command_line_is_well_formed() {
    Cli::command().debug_assert();
}

#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    assert_eq!(main_with_args(["conductor-netd", "--help"]), exit::OK);
    assert_eq!(
        main_with_args(["conductor-netd", "frobnicate"]),
        exit::USAGE
    );
    assert_eq!(
        main_with_args(["conductor-netd", "attach", "n"]),
        exit::USAGE
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
        exit::USAGE
    );
    assert_eq!(
        main_with_args(["conductor-netd", "network", "create", "n", "--mtu", "big"]),
        exit::USAGE
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
