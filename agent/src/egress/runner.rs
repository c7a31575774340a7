//! Running the firewall programs: a small trait so that unit tests can see
//! (and script the answers to) every command a backend issues, without root.
//! The real runner uses tokio::process: a worker never waits on a child.

use std::future::Future;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use super::error::EgressError;

/// What a program printed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    pub stdout: String,
}

pub trait CommandRunner: Send + Sync {
    /// Run `program args` with `stdin` fed to it; Ok only for exit status 0.
    fn run(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> impl Future<Output = Result<Output, EgressError>> + Send;
}

/// Runs programs for real, each killed after `timeout`.
#[derive(Debug, Clone)]
pub struct ProcessRunner {
    pub timeout: Duration,
}

impl Default for ProcessRunner {
    fn default() -> Self {
        ProcessRunner {
            timeout: Duration::from_secs(30),
        }
    }
}

impl CommandRunner for ProcessRunner {
    async fn run(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<Output, EgressError> {
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|source| EgressError::Spawn {
            program: program.to_string(),
            source,
        })?;
        let run = async {
            if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
                // A program that exits early closes the pipe; its status says why.
                let _ = pipe.write_all(input.as_bytes()).await;
                drop(pipe);
            }
            child.wait_with_output().await
        };
        let out = match tokio::time::timeout(self.timeout, run).await {
            Ok(r) => r.map_err(|source| EgressError::Spawn {
                program: program.to_string(),
                source,
            })?,
            Err(_) => {
                return Err(EgressError::Timeout {
                    program: program.to_string(),
                    after: self.timeout,
                })
            }
        };
        if !out.status.success() {
            let mut stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
            if let Some(line) = stdin.and_then(|s| failing_line(&stderr, s)) {
                stderr.push_str(&format!(" [input line: {line}]"));
            }
            return Err(EgressError::Command {
                program: program.to_string(),
                args: args.join(" "),
                status: out.status.to_string(),
                stderr,
            });
        }
        Ok(Output {
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        })
    }
}

/// iptables-restore names the line it refused ("Error occurred at line: N").
fn failing_line<'a>(stderr: &str, input: &'a str) -> Option<&'a str> {
    let n: usize = stderr
        .split("line: ")
        .nth(1)?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    input.lines().nth(n.checked_sub(1)?)
}

/// One command a [`ScriptedRunner`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub program: String,
    pub args: Vec<String>,
    pub stdin: Option<String>,
}

type Answer = Box<dyn Fn(&Call) -> Result<Output, EgressError> + Send + Sync>;

/// A runner for tests: records every call and answers through a closure.
pub struct ScriptedRunner {
    calls: Mutex<Vec<Call>>,
    answer: Answer,
}

impl ScriptedRunner {
    pub fn new(
        answer: impl Fn(&Call) -> Result<Output, EgressError> + Send + Sync + 'static,
    ) -> Self {
        ScriptedRunner {
            calls: Mutex::new(Vec::new()),
            answer: Box::new(answer),
        }
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

impl CommandRunner for ScriptedRunner {
    async fn run(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<Output, EgressError> {
        let call = Call {
            program: program.to_string(),
            args: args.iter().map(|a| a.to_string()).collect(),
            stdin: stdin.map(str::to_string),
        };
        let answer = (self.answer)(&call);
        if let Ok(mut calls) = self.calls.lock() {
            calls.push(call);
        }
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn process_runner_reports_status_stderr_and_the_refused_line() {
        let r = ProcessRunner::default();
        let out = r.run("sh", &["-c", "cat"], Some("hi\n")).await.unwrap();
        assert_eq!(out.stdout, "hi\n");
        let e = r
            .run(
                "sh",
                &[
                    "-c",
                    "cat >/dev/null; echo 'Error occurred at line: 2' >&2; exit 2",
                ],
                Some("*nat\n-A BAD\nCOMMIT\n"),
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line: 2") && e.contains("[input line: -A BAD]"),
            "{e}"
        );
        let e = r.run("/nonexistent/iptables", &[], None).await.unwrap_err();
        assert!(matches!(e, EgressError::Spawn { .. }), "{e}");
    }

    #[tokio::test]
    async fn process_runner_kills_what_hangs() {
        let r = ProcessRunner {
            timeout: Duration::from_millis(100),
        };
        let e = r.run("sleep", &["10"], None).await.unwrap_err();
        assert!(matches!(e, EgressError::Timeout { .. }), "{e}");
    }
}
