use std::process::Command;

fn netd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_conductor-netd"))
}

#[test]
fn help_exits_zero() {
    let out = netd().arg("--help").output().expect("run conductor-netd");
    assert!(out.status.success());
}
