//! A container's network namespace, as Docker reports it, for
//! `attach|detach NET --container NAME|ID`.

use std::path::PathBuf;

use bollard::Docker;

use super::error::{status_of, Result, WorkerError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerNetns {
    pub id: String,
    pub pid: i32,
    /// Docker's bind mount of the namespace (`SandboxKey`): stable for the
    /// container's life, unlike a pid that may be reused.
    pub sandbox: Option<PathBuf>,
}

pub async fn container_netns(docker: &Docker, name: &str) -> Result<ContainerNetns> {
    let c = docker
        .inspect_container(name, None)
        .await
        .map_err(|e| match status_of(&e) {
            Some(404) => WorkerError::NoContainer(name.to_string()),
            _ => WorkerError::docker(format!("inspect {name:?}"), e),
        })?;
    let state = c.state.as_ref();
    let pid = state.and_then(|s| s.pid).unwrap_or(0);
    if !state.and_then(|s| s.running).unwrap_or(false) || pid <= 0 {
        return Err(WorkerError::NotRunning {
            name: name.to_string(),
            state: state
                .and_then(|s| s.status)
                .map(|s| s.to_string())
                .unwrap_or_else(|| "unknown".into()),
        });
    }
    let sandbox = c
        .network_settings
        .and_then(|s| s.sandbox_key)
        .filter(|k| !k.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.exists());
    Ok(ContainerNetns {
        id: c.id.unwrap_or_default(),
        pid: pid as i32,
        sandbox,
    })
}
