//! Workers across parent restarts.
//!
//! Docker leaves a `--network=container:P` worker in P's old network
//! namespace (only `lo` left) when P restarts (moby issues 24935 and
//! 36334), and a worker whose parent was removed and created again under
//! the same name points at a container that is gone. A process cannot be
//! moved into another network namespace from outside, so netd re-creates
//! such workers: when a parent starts (an event, or netd's resync at its
//! own start), every running worker that asked for it (label
//! `conductor.on-parent-restart=recreate`, set by `worker spawn --detach`)
//! and is not in the parent's current namespace - it belongs to another
//! container id, or it started before the parent's current start - is
//! created again, oldest first, in `container:<parent id>` with the same
//! name, image, command, environment, mounts and limits, and started; the
//! old one is removed. Its process starts afresh.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bollard::models::{ContainerCreateBody, ContainerInspectResponse};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
    RenameContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use bollard::Docker;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::model::{PARENT_LABEL, ROLE_LABEL, ROLE_WORKER};
use super::spawn::remove;
use crate::api::types::DockerEngineRequest;
use crate::docker::model::{DockerContainer, DockerNetwork};
use crate::docker::{DockerObserver, Done};

/// Set on detached workers: re-create me when my parent restarts.
pub const RESTART_LABEL: &str = "conductor.on-parent-restart";
pub const RESTART_RECREATE: &str = "recreate";
/// The parent's name when the worker was spawned: a parent removed and
/// created again under that name is still its parent.
pub const PARENT_NAME_LABEL: &str = "conductor.parent-name";

/// In the name of a worker being replaced (`NAME-replaced-<id prefix>`):
/// never re-created itself.
const REPLACED_MARK: &str = "-replaced-";

/// One Docker request may take this long (dockerd in gVisor can hang on a
/// container it is removing; the follower must not hang with it).
const DOCKER_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts to start a re-created worker (its parent may still be setting
/// up its namespace).
const START_ATTEMPTS: u32 = 3;

/// Follows parents for their workers (a Docker observer).
#[derive(Default)]
pub struct ParentFollower {
    /// One parent at a time: two events for one parent must not both
    /// re-create the same worker.
    serial: Arc<tokio::sync::Mutex<()>>,
}

impl DockerObserver for ParentFollower {
    fn container_up<'a>(
        &'a self,
        engine: &'a DockerEngineRequest,
        container: &'a DockerContainer,
        old: Option<&'a DockerContainer>,
        _networks: &'a HashMap<String, DockerNetwork>,
    ) -> Done<'a> {
        let is_worker = container.labels.get(ROLE_LABEL).map(String::as_str) == Some(ROLE_WORKER);
        // A new start (not a change of a running container's networks).
        let started = old.is_none_or(|o| o.pid != container.pid);
        if !is_worker && started {
            // Off the watcher: Docker requests must not hold up its events.
            let serial = self.serial.clone();
            let socket = engine.socket.clone();
            let (id, name) = (container.id.clone(), container.name.clone());
            tokio::spawn(async move {
                let _one = serial.lock().await;
                if let Err(e) = follow(socket, &id, &name).await {
                    tracing::warn!(parent = %name, error = %e, "workers of a restarted parent");
                }
            });
        }
        Box::pin(async {})
    }
}

async fn timed<T>(
    what: &str,
    call: impl std::future::Future<Output = Result<T, bollard::errors::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(DOCKER_TIMEOUT, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!(
            "{what}: no answer from Docker in {DOCKER_TIMEOUT:?}"
        )),
    }
}

fn started_at(c: &ContainerInspectResponse) -> Option<OffsetDateTime> {
    let at = c.state.as_ref()?.started_at.as_deref()?;
    OffsetDateTime::parse(at, &Rfc3339).ok()
}

fn label<'a>(c: &'a ContainerInspectResponse, key: &str) -> Option<&'a str> {
    c.config
        .as_ref()?
        .labels
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// Whether a running worker of this parent is outside its namespace now.
fn stale(worker: &ContainerInspectResponse, parent_id: &str, parent_start: OffsetDateTime) -> bool {
    if label(worker, PARENT_LABEL) != Some(parent_id) {
        return true;
    }
    // Started before the parent's current start: joined the namespace the
    // parent had then.
    started_at(worker).is_none_or(|at| at < parent_start)
}

/// The workers of the parent `id` (also those of an earlier container of
/// that name) that are not in its namespace, re-created oldest first.
async fn follow(socket: PathBuf, id: &str, name: &str) -> Result<(), String> {
    let docker = crate::docker::connect(&socket)
        .await
        .map_err(|e| e.to_string())?;
    let labels = vec![
        format!("{ROLE_LABEL}={ROLE_WORKER}"),
        format!("{RESTART_LABEL}={RESTART_RECREATE}"),
    ];
    let filters = HashMap::from([("label".to_string(), labels)]);
    let options = ListContainersOptionsBuilder::new()
        .filters(&filters)
        .build();
    let mut listed = timed("list workers", docker.list_containers(Some(options))).await?;
    listed.retain(|w| {
        let replaced = w.names.iter().flatten().any(|n| n.contains(REPLACED_MARK));
        if replaced {
            return false;
        }
        let l = w.labels.as_ref();
        let get = |k: &str| l.and_then(|l| l.get(k)).map(String::as_str);
        get(PARENT_LABEL) == Some(id) || get(PARENT_NAME_LABEL) == Some(name)
    });
    if listed.is_empty() {
        return Ok(());
    }
    let parent = timed("inspect parent", docker.inspect_container(id, None)).await?;
    if !parent
        .state
        .as_ref()
        .and_then(|s| s.running)
        .unwrap_or(false)
    {
        return Ok(());
    }
    let Some(parent_start) = started_at(&parent) else {
        return Err(format!("parent {name}: Docker gives no start time"));
    };
    listed.sort_by_key(|w| w.created.unwrap_or_default());
    for summary in listed {
        let Some(worker_id) = summary.id.as_deref() else {
            continue;
        };
        let worker = timed("inspect worker", docker.inspect_container(worker_id, None)).await?;
        if !stale(&worker, id, parent_start) {
            continue;
        }
        let worker_name = worker
            .name
            .as_deref()
            .unwrap_or(worker_id)
            .trim_start_matches('/')
            .to_string();
        match recreate(&docker, &worker, &worker_name, id, name).await {
            Ok(new_id) => {
                tracing::info!(worker = %worker_name, parent = %name, id = %new_id, "worker re-created in its restarted parent's namespace")
            }
            Err(e) => {
                tracing::warn!(worker = %worker_name, parent = %name, error = %e, "worker not re-created")
            }
        }
    }
    Ok(())
}

/// What a worker is created from again: its configuration, in the parent's
/// namespace now.
fn recreated_body(
    worker: &ContainerInspectResponse,
    parent_id: &str,
    parent_name: &str,
) -> ContainerCreateBody {
    let config = worker.config.clone().unwrap_or_default();
    let mut labels = config.labels.unwrap_or_default();
    labels.insert(PARENT_LABEL.into(), parent_id.into());
    labels.insert(PARENT_NAME_LABEL.into(), parent_name.into());
    let mut host_config = worker.host_config.clone().unwrap_or_default();
    host_config.network_mode = Some(format!("container:{parent_id}"));
    ContainerCreateBody {
        user: config.user,
        // Nobody is attached to a re-created worker.
        attach_stdin: Some(false),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(false),
        stdin_once: Some(false),
        tty: config.tty,
        env: config.env,
        cmd: config.cmd,
        entrypoint: config.entrypoint,
        image: config.image,
        working_dir: config.working_dir,
        volumes: config.volumes,
        stop_signal: config.stop_signal,
        stop_timeout: config.stop_timeout,
        labels: Some(labels),
        host_config: Some(host_config),
        ..Default::default()
    }
}

/// The old worker is renamed aside and stopped (it only has `lo`; a
/// worker must never run twice), the new one created under its name and
/// started, and the old one removed in the background (inside gVisor a
/// removal can hang for minutes; the next worker must not wait for it). On
/// failure the old one gets its name back and is started again.
async fn recreate(
    docker: &Docker,
    worker: &ContainerInspectResponse,
    name: &str,
    parent_id: &str,
    parent_name: &str,
) -> Result<String, String> {
    let old_id = worker.id.clone().unwrap_or_default();
    let aside = format!(
        "{name}{REPLACED_MARK}{}",
        &old_id.chars().take(12).collect::<String>()
    );
    let rename = |to: &str| RenameContainerOptionsBuilder::new().name(to).build();
    timed(
        "rename the old worker",
        docker.rename_container(&old_id, rename(&aside)),
    )
    .await?;
    let stop = StopContainerOptionsBuilder::new()
        .t(RETIRE_GRACE_SECS)
        .build();
    if let Err(e) = timed(
        "stop the old worker",
        docker.stop_container(&old_id, Some(stop)),
    )
    .await
    {
        tracing::debug!(container = %old_id, error = %e, "old worker not stopped");
    }
    let body = recreated_body(worker, parent_id, parent_name);
    let options = CreateContainerOptionsBuilder::new().name(name).build();
    let mut last = String::new();
    match timed("create", docker.create_container(Some(options), body)).await {
        Ok(created) => {
            for attempt in 1..=START_ATTEMPTS {
                match timed("start", docker.start_container(&created.id, None)).await {
                    Ok(()) => {
                        tokio::spawn(retire(docker.clone(), old_id));
                        return Ok(created.id);
                    }
                    Err(e) => last = e,
                }
                tokio::time::sleep(Duration::from_millis(300 * u64::from(attempt))).await;
            }
            remove(docker, &created.id).await;
        }
        Err(e) => last = e,
    }
    // Back as it was (an auto-removed worker is gone with its stop).
    if timed(
        "rename back",
        docker.rename_container(&old_id, rename(name)),
    )
    .await
    .is_ok()
    {
        let _ = timed("start again", docker.start_container(&old_id, None)).await;
    }
    Err(last)
}

/// Seconds a replaced worker gets to exit on SIGTERM before it is killed.
const RETIRE_GRACE_SECS: i32 = 3;

/// The replaced (stopped) worker, removed; auto-removed ones are gone.
async fn retire(docker: Docker, id: String) {
    let rm = RemoveContainerOptionsBuilder::new().force(true).build();
    match timed(
        "remove the replaced worker",
        docker.remove_container(&id, Some(rm)),
    )
    .await
    {
        Ok(()) => {}
        Err(e) if e.contains("404") || e.contains("No such container") => {}
        Err(e) => tracing::warn!(container = %id, error = %e, "replaced worker not removed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inspect(json: serde_json::Value) -> ContainerInspectResponse {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_worker_is_stale_when_it_started_before_its_parent_or_belongs_to_another_id() {
        let parent_start = OffsetDateTime::parse("2026-12-03T10:00:00.5Z", &Rfc3339).unwrap();
        let worker = |parent: &str, started: &str| {
            inspect(serde_json::json!({
                "Id": "w", "State": {"Running": true, "StartedAt": started},
                "Config": {"Labels": {PARENT_LABEL: parent}}
            }))
        };
        // Go trims trailing zeros: .5 vs .45 must compare as times.
        assert!(stale(
            &worker("p1", "2026-12-03T10:00:00.45Z"),
            "p1",
            parent_start
        ));
        assert!(!stale(
            &worker("p1", "2026-12-03T10:00:00.51Z"),
            "p1",
            parent_start
        ));
        assert!(stale(
            &worker("p0", "2026-12-03T10:00:01Z"),
            "p1",
            parent_start
        ));
        assert!(stale(&worker("p1", "not a time"), "p1", parent_start));
    }

    #[test]
    fn a_recreated_worker_keeps_its_configuration_in_the_new_namespace() {
        let worker = inspect(serde_json::json!({
            "Id": "w", "Name": "/w1",
            "Config": {"Image": "bb", "Cmd": ["sh", "-c", "serve"], "Env": ["K=V"],
                       "OpenStdin": true,
                       "Labels": {ROLE_LABEL: ROLE_WORKER, PARENT_LABEL: "old",
                                  RESTART_LABEL: RESTART_RECREATE}},
            "HostConfig": {"NetworkMode": "container:old", "Binds": ["/src:/dst:ro"],
                           "NanoCpus": 500000000, "AutoRemove": true}
        }));
        let body = recreated_body(&worker, "new", "par");
        let host = body.host_config.unwrap();
        assert_eq!(host.network_mode.as_deref(), Some("container:new"));
        assert_eq!(host.binds.unwrap(), ["/src:/dst:ro"]);
        assert_eq!(host.nano_cpus, Some(500_000_000));
        assert_eq!(host.auto_remove, Some(true));
        assert_eq!(body.image.as_deref(), Some("bb"));
        assert_eq!(body.cmd.unwrap(), ["sh", "-c", "serve"]);
        assert_eq!(body.env.unwrap(), ["K=V"]);
        assert_eq!(body.open_stdin, Some(false));
        let labels = body.labels.unwrap();
        assert_eq!(labels[PARENT_LABEL], "new");
        assert_eq!(labels[PARENT_NAME_LABEL], "par");
        assert_eq!(labels[RESTART_LABEL], RESTART_RECREATE);
    }
}
