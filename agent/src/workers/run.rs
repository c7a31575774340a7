//! Foreground work: `worker run` (like `docker run -i --rm`), `worker
//! logs`, `worker exec`.

use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, KillContainerOptionsBuilder, LogsOptionsBuilder,
    WaitContainerOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;
use tokio::signal::unix::{signal, SignalKind};

use super::error::{command_failure, Result, WorkerError};
use super::io::{pump_output, pump_stdin, RawTerminal};
use super::query::worker_id;
use super::spawn::{create_worker, remove, WorkerSpec};

/// Run a worker in the foreground: output streamed as it comes, stdin
/// piped with `spec.stdin`, SIGINT/SIGTERM/SIGHUP forwarded; removed
/// afterwards unless `spec.keep`. Returns its exit code (127/126 when its
/// command cannot be executed, as docker's).
pub async fn run(docker: &Docker, spec: &WorkerSpec) -> Result<i32> {
    // Removed by us, not by Docker: the exit code must be read first.
    let created = create_worker(docker, spec, false, false).await?;
    let id = created.id.clone();
    let code = run_created(docker, spec, &id).await;
    if !spec.keep {
        remove(docker, &id).await;
    }
    code
}

async fn run_created(docker: &Docker, spec: &WorkerSpec, id: &str) -> Result<i32> {
    // Attached before the start, so no early output is lost.
    let options = AttachContainerOptionsBuilder::new()
        .stream(true)
        .stdin(spec.stdin)
        .stdout(true)
        .stderr(true)
        .build();
    let attached = docker
        .attach_container(id, Some(options))
        .await
        .map_err(|e| WorkerError::docker(format!("attach to {id:.12}"), e))?;
    if let Err(e) = docker.start_container(id, None).await {
        return match command_failure(&e) {
            Some((code, message)) => {
                eprintln!(
                    "conductor-netd: command {:?} cannot be run: {message}",
                    spec.cmd.join(" ")
                );
                Ok(code)
            }
            None => Err(WorkerError::docker(format!("start {id:.12}"), e)),
        };
    }
    if spec.stdin {
        pump_stdin(attached.input);
    }
    let forwarder = tokio::spawn(forward_signals(docker.clone(), id.to_string()));
    let copied = pump_output(attached.output).await;
    let code = exit_code(docker, id).await;
    forwarder.abort();
    copied?;
    code
}

/// Forward the signals a user (or a parent program) sends us.
async fn forward_signals(docker: Docker, id: String) {
    let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::warn!("cannot catch signals; they will not be forwarded");
        return;
    };
    loop {
        let name = tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
            _ = hup.recv() => "SIGHUP",
        };
        let options = KillContainerOptionsBuilder::new().signal(name).build();
        if let Err(e) = docker.kill_container(&id, Some(options)).await {
            tracing::warn!(signal = name, error = %e, "could not forward the signal");
        }
    }
}

async fn exit_code(docker: &Docker, id: &str) -> Result<i32> {
    let options = WaitContainerOptionsBuilder::new()
        .condition("not-running")
        .build();
    let mut wait = docker.wait_container(id, Some(options));
    match wait.next().await {
        Some(Ok(r)) => Ok(r.status_code as i32),
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code as i32),
        Some(Err(e)) => Err(WorkerError::docker(format!("wait for {id:.12}"), e)),
        None => Err(WorkerError::io(
            format!("wait for {id:.12}"),
            std::io::Error::other("Docker closed the wait without a status"),
        )),
    }
}

/// `worker logs NAME [-f]`.
pub async fn logs(docker: &Docker, name: &str, follow: bool) -> Result<()> {
    let id = worker_id(docker, name).await?;
    let options = LogsOptionsBuilder::new()
        .follow(follow)
        .stdout(true)
        .stderr(true)
        .build();
    pump_output(docker.logs(&id, Some(options))).await
}

/// `worker exec NAME [-i] [-t] -- CMD`: its exit code.
pub async fn exec(
    docker: &Docker,
    name: &str,
    cmd: &[String],
    stdin: bool,
    tty: bool,
) -> Result<i32> {
    if cmd.is_empty() {
        return Err(WorkerError::invalid("command", "", "give one after --"));
    }
    let id = worker_id(docker, name).await?;
    let created = docker
        .create_exec(
            &id,
            CreateExecOptions {
                cmd: Some(cmd.to_vec()),
                attach_stdin: Some(stdin),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                tty: Some(tty),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| WorkerError::docker(format!("exec in {name:?}"), e))?;
    let started = docker
        .start_exec(
            &created.id,
            Some(StartExecOptions {
                detach: false,
                tty,
                output_capacity: None,
            }),
        )
        .await
        .map_err(|e| WorkerError::docker(format!("exec in {name:?}"), e))?;
    let StartExecResults::Attached { output, input } = started else {
        return Err(WorkerError::io(
            format!("exec in {name:?}"),
            std::io::Error::other("Docker did not attach"),
        ));
    };
    let _raw = tty.then(RawTerminal::enable);
    if stdin {
        pump_stdin(input);
    }
    pump_output(output).await?;
    let inspect = docker
        .inspect_exec(&created.id)
        .await
        .map_err(|e| WorkerError::docker(format!("exec in {name:?}"), e))?;
    Ok(inspect.exit_code.unwrap_or(0) as i32)
}
