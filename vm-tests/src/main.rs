//! vm-tests: every privileged suite, run twice - on the real kernel inside a
//! private network + mount namespace, and inside real gVisor (`runsc do`) -
//! with a `ENV: N passed, N failed` line for each.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use clap::{Parser, Subcommand};

use vm_tests::harness::{self, Env, Tally};
use vm_tests::{isolation, scripted, suites};

#[derive(Parser)]
#[command(
    name = "vm-tests",
    about = "Privileged end-to-end suites (root): real kernel and gVisor"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// Run only tests whose name contains this.
    #[arg(long, global = true)]
    filter: Option<String>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Both environments (the default).
    All,
    /// One environment: `kernel` or `gvisor`.
    Env { env: String },
    /// Run the suites in this process, in the environment it is already in.
    #[command(hide = true)]
    Inner { env: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = cli.filter.as_deref();
    match cli.command.unwrap_or(Cmd::All) {
        Cmd::All => run_envs(&[Env::Kernel, Env::Gvisor], filter),
        Cmd::Env { env } => match Env::parse(&env) {
            Some(e) => run_envs(&[e], filter),
            None => {
                eprintln!("vm-tests: unknown environment {env:?} (kernel or gvisor)");
                ExitCode::from(2)
            }
        },
        Cmd::Inner { env } => match Env::parse(&env) {
            Some(e) => inner(e, filter),
            None => ExitCode::from(2),
        },
    }
}

/// Run each environment in a child process and print the summaries last.
fn run_envs(envs: &[Env], filter: Option<&str>) -> ExitCode {
    let mut summaries = Vec::new();
    let mut total = Tally::default();
    for &env in envs {
        let (tally, ok) = match spawn_env(env, filter) {
            Ok(r) => r,
            Err(e) => {
                println!("FAIL {}: could not run: {e}", env.name());
                (
                    Tally {
                        passed: 0,
                        failed: 1,
                    },
                    false,
                )
            }
        };
        let mut tally = tally;
        if !ok && tally.failed == 0 {
            tally.failed = 1; // the child died without reporting a failure
        }
        summaries.push(format!(
            "{}: {} passed, {} failed",
            env.name(),
            tally.passed,
            tally.failed
        ));
        total.passed += tally.passed;
        total.failed += tally.failed;
    }
    println!();
    for s in &summaries {
        println!("{s}");
    }
    println!("vm-tests: {} passed, {} failed", total.passed, total.failed);
    if total.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn spawn_env(env: Env, filter: Option<&str>) -> Result<(Tally, bool), String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut args: Vec<String> = vec!["inner".into(), env.name().into()];
    if let Some(f) = filter {
        args.extend(["--filter".into(), f.into()]);
    }
    let mut state_dir = None;
    let mut cmd = match env {
        Env::Kernel => {
            let mut c = Command::new(&me);
            c.args(&args);
            c
        }
        Env::Gvisor => {
            let dir = tempdir("runsc-root")?;
            let mut c = Command::new("runsc");
            c.arg("--root")
                .arg(&dir)
                .args(["--network=none", "--net-raw", "--platform=ptrace", "do"])
                .arg(&me)
                .args(&args);
            state_dir = Some(dir);
            c
        }
    };
    println!("== {} ==", env.name());
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("start {:?}: {e}", cmd.get_program()))?;
    let mut tally = Tally::default();
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            println!("{line}");
            if line.starts_with("ok ") {
                tally.passed += 1;
            } else if line.starts_with("FAIL ") {
                tally.failed += 1;
            }
        }
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    if let Some(dir) = state_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    Ok((tally, status.success()))
}

/// `runsc do` makes its command the sandbox's pid 1, and orphans (Docker's
/// shims and proxies after `docker down`) are reparented to pid 1: left
/// unreaped they stay as zombies, which the suites' "nothing left" rows
/// count. So pid 1 only reaps, and runs the suites in a child.
fn run_as_init() -> ExitCode {
    use nix::errno::Errno;
    use nix::sys::wait::{waitpid, WaitStatus};
    let me = match std::env::current_exe() {
        Ok(me) => me,
        Err(e) => {
            println!("FAIL init: {e}");
            return ExitCode::FAILURE;
        }
    };
    let suites = match Command::new(me).args(std::env::args_os().skip(1)).spawn() {
        Ok(child) => child.id() as i32,
        Err(e) => {
            println!("FAIL init: start the suites: {e}");
            return ExitCode::FAILURE;
        }
    };
    loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(pid, code)) if pid.as_raw() == suites => {
                return ExitCode::from(u8::try_from(code).unwrap_or(1));
            }
            Ok(WaitStatus::Signaled(pid, _, _)) if pid.as_raw() == suites => {
                return ExitCode::FAILURE;
            }
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => {
                println!("FAIL init: wait: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
}

fn tempdir(tag: &str) -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("vm-tests-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

/// Run inside the environment: Rust suites, then the scripted suites.
fn inner(env: Env, filter: Option<&str>) -> ExitCode {
    if std::process::id() == 1 {
        return run_as_init();
    }
    if env == Env::Kernel {
        if let Err(e) =
            isolation::enter_private_namespaces().and_then(|()| isolation::loopback_up())
        {
            println!("FAIL isolation: {e}");
            return ExitCode::FAILURE;
        }
    }
    let mut tally = Tally::default();
    harness::run_tests(&suites::all(), env, filter, &mut tally);
    for script in scripted::suites(Path::new(env!("CARGO_MANIFEST_DIR"))) {
        scripted::run(&script, env, filter, &mut tally);
    }
    if tally.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
