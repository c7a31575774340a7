//! Creating workers (network mode `container:<parent id>`, labelled with
//! their role and parent) and parents.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

use bollard::models::{ContainerCreateBody, ContainerInspectResponse, HostConfig};
use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};
use bollard::Docker;

use super::error::{command_failure, status_of, Result, WorkerError};
use super::follow::{PARENT_NAME_LABEL, RESTART_LABEL, RESTART_RECREATE};
use super::model::{PARENT_LABEL, ROLE_LABEL, ROLE_PARENT, ROLE_WORKER};
use super::spec::{validate_name, Volume};
use crate::docker::NETWORK_LABEL;

/// What a worker is made of (already parsed and checked).
#[derive(Debug, Clone, Default)]
pub struct WorkerSpec {
    pub parent: String,
    pub name: Option<String>,
    pub image: Option<String>,
    pub volumes: Vec<Volume>,
    pub env: Vec<String>,
    pub nano_cpus: Option<i64>,
    pub memory: Option<i64>,
    /// Keep the container after it exits.
    pub keep: bool,
    pub cmd: Vec<String>,
    /// Attach stdin (`worker run -i`).
    pub stdin: bool,
}

/// A created worker.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Created {
    pub id: String,
    pub name: String,
    pub parent: String,
    pub image: String,
}

/// The parent, checked to exist and run.
pub async fn running_parent(docker: &Docker, parent: &str) -> Result<ContainerInspectResponse> {
    let c = docker
        .inspect_container(parent, None)
        .await
        .map_err(|e| match status_of(&e) {
            Some(404) => WorkerError::ParentMissing(parent.to_string()),
            _ => WorkerError::docker(format!("inspect parent {parent:?}"), e),
        })?;
    let state = c.state.as_ref();
    if !state.and_then(|s| s.running).unwrap_or(false) {
        return Err(WorkerError::ParentNotRunning {
            name: parent.to_string(),
            state: state
                .and_then(|s| s.status)
                .map(|s| s.to_string())
                .unwrap_or_else(|| "unknown".into()),
        });
    }
    Ok(c)
}

/// The image exists locally (nothing is pulled).
pub async fn check_image(docker: &Docker, image: &str) -> Result<()> {
    match docker.inspect_image(image).await {
        Ok(_) => Ok(()),
        Err(e) if status_of(&e) == Some(404) => Err(WorkerError::ImageMissing(image.to_string())),
        Err(e) => Err(WorkerError::docker(format!("inspect image {image:?}"), e)),
    }
}

/// The parent's image: the name it was started with while that still
/// names an image, else its image id.
async fn parent_image(docker: &Docker, parent: &ContainerInspectResponse) -> String {
    if let Some(name) = parent.config.as_ref().and_then(|c| c.image.clone()) {
        if docker.inspect_image(&name).await.is_ok() {
            return name;
        }
    }
    parent.image.clone().unwrap_or_default()
}

fn generated_name(parent_name: &str) -> String {
    let mut h = RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    format!("{parent_name}-w{:06x}", h.finish() & 0xff_ffff)
}

/// Create (do not start) a worker of a running parent. `auto_remove`: let
/// Docker remove it when it exits (detached workers without --keep).
/// `follow_parent`: netd re-creates it when its parent restarts
/// (follow.rs; detached workers - a foreground one ends with its command).
pub async fn create_worker(
    docker: &Docker,
    spec: &WorkerSpec,
    auto_remove: bool,
    follow_parent: bool,
) -> Result<Created> {
    if let Some(n) = &spec.name {
        validate_name(n)?;
    }
    let parent = running_parent(docker, &spec.parent).await?;
    let parent_id = parent.id.clone().unwrap_or_default();
    let parent_name = parent
        .name
        .as_deref()
        .unwrap_or(&spec.parent)
        .trim_start_matches('/')
        .to_string();
    let image = match &spec.image {
        Some(i) => {
            check_image(docker, i).await?;
            i.clone()
        }
        None => parent_image(docker, &parent).await,
    };
    let name = spec
        .name
        .clone()
        .unwrap_or_else(|| generated_name(&parent_name));
    let mut labels = HashMap::from([
        (ROLE_LABEL.to_string(), ROLE_WORKER.to_string()),
        (PARENT_LABEL.to_string(), parent_id.clone()),
        (PARENT_NAME_LABEL.to_string(), parent_name.clone()),
    ]);
    if follow_parent {
        labels.insert(RESTART_LABEL.into(), RESTART_RECREATE.into());
    }
    let body = ContainerCreateBody {
        image: Some(image.clone()),
        cmd: (!spec.cmd.is_empty()).then(|| spec.cmd.clone()),
        env: (!spec.env.is_empty()).then(|| spec.env.clone()),
        labels: Some(labels),
        attach_stdin: Some(spec.stdin),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(spec.stdin),
        stdin_once: Some(spec.stdin),
        host_config: Some(HostConfig {
            network_mode: Some(format!("container:{parent_id}")),
            binds: (!spec.volumes.is_empty())
                .then(|| spec.volumes.iter().map(Volume::bind).collect()),
            nano_cpus: spec.nano_cpus,
            memory: spec.memory,
            auto_remove: Some(auto_remove),
            ..Default::default()
        }),
        ..Default::default()
    };
    let options = CreateContainerOptionsBuilder::new().name(&name).build();
    let created =
        docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| match status_of(&e) {
                Some(409) => WorkerError::NameInUse(name.clone()),
                Some(404) => WorkerError::ImageMissing(image.clone()),
                _ => WorkerError::docker(format!("create worker {name:?}"), e),
            })?;
    Ok(Created {
        id: created.id,
        name,
        parent: parent_id,
        image,
    })
}

/// Start a created container; when it cannot start, remove it (nothing
/// left behind) and say why. A command that cannot be executed is
/// `WorkerError::Command`, whose exit code `worker run` turns into 127/126.
pub async fn start(docker: &Docker, id: &str, name: &str, cmd: &[String]) -> Result<()> {
    let Err(e) = docker.start_container(id, None).await else {
        return Ok(());
    };
    remove(docker, id).await;
    Err(match command_failure(&e) {
        Some((_, message)) => WorkerError::Command {
            command: cmd.join(" "),
            message,
        },
        None => WorkerError::docker(format!("start {name:?}"), e),
    })
}

/// Remove a container, ignoring "already gone" (auto-removal races us).
pub async fn remove(docker: &Docker, id: &str) {
    let options = RemoveContainerOptionsBuilder::new().force(true).build();
    if let Err(e) = docker.remove_container(id, Some(options)).await {
        if !matches!(status_of(&e), Some(404) | Some(409)) {
            tracing::warn!(container = id, error = %e, "could not remove container");
        }
    }
}

/// A detached worker: created and started.
pub async fn spawn_detached(docker: &Docker, spec: &WorkerSpec) -> Result<Created> {
    let created = create_worker(docker, spec, !spec.keep, true).await?;
    start(docker, &created.id, &created.name, &spec.cmd).await?;
    Ok(created)
}

/// `worker parent create NAME [--network NET] [--image I]`: a container
/// that only holds a network namespace for workers (its process sleeps).
/// NET is a Docker network, or else a conductor network.
pub async fn create_parent(
    docker: &Docker,
    name: &str,
    network: Option<&str>,
    image: &str,
    labels: HashMap<String, String>,
) -> Result<String> {
    validate_name(name)?;
    check_image(docker, image).await?;
    let mut labels = labels;
    labels.insert(ROLE_LABEL.into(), ROLE_PARENT.into());
    // A Docker network by that name is joined; any other name is taken
    // as a conductor network: no Docker networking, and the label that
    // has netd attach it (docker/labelled.rs).
    let network_mode = match network {
        None => None,
        Some(n) => match docker.inspect_network(n, None).await {
            Ok(_) => Some(n.to_string()),
            Err(e) if status_of(&e) == Some(404) => {
                labels.insert(NETWORK_LABEL.into(), n.to_string());
                Some("none".to_string())
            }
            Err(e) => return Err(WorkerError::docker(format!("inspect network {n:?}"), e)),
        },
    };
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        // A shell that exits at once on TERM (a plain `sleep` as pid 1
        // ignores it and `docker stop` would wait 10 s).
        cmd: Some(vec![
            "sh".into(),
            "-c".into(),
            "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done".into(),
        ]),
        labels: Some(labels),
        host_config: Some(HostConfig {
            network_mode,
            ..Default::default()
        }),
        ..Default::default()
    };
    let options = CreateContainerOptionsBuilder::new().name(name).build();
    let created =
        docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| match status_of(&e) {
                Some(409) => WorkerError::NameInUse(name.to_string()),
                Some(404) => WorkerError::ImageMissing(image.to_string()),
                _ => WorkerError::docker(format!("create parent {name:?}"), e),
            })?;
    let cmd = ["sh".to_string()];
    start(docker, &created.id, name, &cmd).await?;
    Ok(created.id)
}
