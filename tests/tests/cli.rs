use std::process::Command;

use conductor_tests::netd_bin;

fn netd() -> Command {
    Command::new(netd_bin())
}

#[test]
fn help_exits_zero() {
    let out = netd().arg("--help").output().expect("run conductor-netd");
    assert!(out.status.success());
}
