//! Finding workers by label, stopping them, and their status.

use std::collections::{BTreeMap, HashMap};

use bollard::query_parameters::{ListContainersOptionsBuilder, StopContainerOptionsBuilder};
use bollard::Docker;
use futures::future::join_all;

use super::error::{status_of, Result, WorkerError};
use super::model::{ParentStatus, WorkerInfo, WorkerStatus, PARENT_LABEL, ROLE_LABEL, ROLE_WORKER};

/// Seconds `docker stop` waits before it kills.
const STOP_GRACE_SECS: i32 = 10;

/// The parent's full id (it may be gone: then the given id is used as is,
/// so that workers of a removed parent can still be listed and stopped).
async fn parent_id(docker: &Docker, parent: &str) -> Result<String> {
    match docker.inspect_container(parent, None).await {
        Ok(c) => Ok(c.id.unwrap_or_default()),
        Err(e) if status_of(&e) == Some(404) => {
            if parent.len() == 64 && parent.chars().all(|c| c.is_ascii_hexdigit()) {
                Ok(parent.to_string())
            } else {
                Err(WorkerError::ParentMissing(parent.to_string()))
            }
        }
        Err(e) => Err(WorkerError::docker(format!("inspect parent {parent:?}"), e)),
    }
}

/// Workers (running or not), of one parent or all, oldest first.
pub async fn list(
    docker: &Docker,
    parent: Option<&str>,
    running_only: bool,
) -> Result<Vec<WorkerInfo>> {
    let mut labels = vec![format!("{ROLE_LABEL}={ROLE_WORKER}")];
    if let Some(p) = parent {
        labels.push(format!("{PARENT_LABEL}={}", parent_id(docker, p).await?));
    }
    let mut filters = HashMap::from([("label".to_string(), labels)]);
    if running_only {
        filters.insert("status".into(), vec!["running".into()]);
    }
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    let mut workers: Vec<WorkerInfo> = docker
        .list_containers(Some(options))
        .await
        .map_err(|e| WorkerError::docker("list workers", e))?
        .iter()
        .map(WorkerInfo::from_summary)
        .collect();
    workers.sort_by(|a, b| (a.created, &a.name).cmp(&(b.created, &b.name)));
    Ok(workers)
}

/// The full id of the worker `name` (a name or id): it must carry the
/// worker label.
pub async fn worker_id(docker: &Docker, name: &str) -> Result<String> {
    let c = docker
        .inspect_container(name, None)
        .await
        .map_err(|e| match status_of(&e) {
            Some(404) => WorkerError::NoWorker(name.to_string()),
            _ => WorkerError::docker(format!("inspect {name:?}"), e),
        })?;
    let is_worker = c
        .config
        .as_ref()
        .and_then(|c| c.labels.as_ref())
        .and_then(|l| l.get(ROLE_LABEL))
        .is_some_and(|r| r == ROLE_WORKER);
    if !is_worker {
        return Err(WorkerError::NoWorker(name.to_string()));
    }
    Ok(c.id.unwrap_or_default())
}

async fn stop_id(docker: &Docker, id: &str, name: &str) -> Result<()> {
    let options = StopContainerOptionsBuilder::new()
        .t(STOP_GRACE_SECS)
        .build();
    match docker.stop_container(id, Some(options)).await {
        // 304: already stopped; 404: auto-removed meanwhile.
        Ok(()) => Ok(()),
        Err(e) if matches!(status_of(&e), Some(304) | Some(404)) => Ok(()),
        Err(e) => Err(WorkerError::docker(format!("stop {name:?}"), e)),
    }
}

pub async fn stop(docker: &Docker, name: &str) -> Result<()> {
    let id = worker_id(docker, name).await?;
    stop_id(docker, &id, name).await
}

/// Stop every running worker (of one parent), concurrently; the names.
pub async fn stop_all(docker: &Docker, parent: Option<&str>) -> Result<Vec<String>> {
    let workers = list(docker, parent, true).await?;
    let results = join_all(workers.iter().map(|w| stop_id(docker, &w.id, &w.name))).await;
    let failures: Vec<String> = results
        .into_iter()
        .filter_map(|r| r.err().map(|e| e.to_string()))
        .collect();
    if let Some(first) = failures.first() {
        return Err(WorkerError::Io {
            context: format!(
                "{} of {} workers did not stop",
                failures.len(),
                workers.len()
            ),
            source: std::io::Error::other(first.clone()),
        });
    }
    Ok(workers.into_iter().map(|w| w.name).collect())
}

/// Every parent that has workers (or the one asked for), its state, and
/// its workers with their exit codes.
pub async fn status(docker: &Docker, parent: Option<&str>) -> Result<Vec<ParentStatus>> {
    let workers = list(docker, parent, false).await?;
    let mut by_parent: BTreeMap<String, Vec<WorkerInfo>> = BTreeMap::new();
    if let Some(p) = parent {
        by_parent.entry(parent_id(docker, p).await?).or_default();
    }
    for w in workers {
        by_parent.entry(w.parent.clone()).or_default().push(w);
    }
    let mut out = Vec::new();
    for (pid, workers) in by_parent {
        let (name, state, started_at) = match docker.inspect_container(&pid, None).await {
            Ok(c) => (
                c.name
                    .unwrap_or_default()
                    .trim_start_matches('/')
                    .to_string(),
                c.state
                    .as_ref()
                    .and_then(|s| s.status)
                    .map(|s| s.to_string())
                    .unwrap_or_default(),
                c.state.and_then(|s| s.started_at),
            ),
            Err(_) => (String::new(), "missing".to_string(), None),
        };
        let mut ws = Vec::new();
        for w in workers {
            let state = docker
                .inspect_container(&w.id, None)
                .await
                .ok()
                .and_then(|c| c.state);
            let running = state.as_ref().and_then(|s| s.running).unwrap_or(false);
            ws.push(WorkerStatus {
                started_at: state.as_ref().and_then(|s| s.started_at.clone()),
                exit_code: state.and_then(|s| s.exit_code).filter(|_| !running),
                worker: w,
            });
        }
        out.push(ParentStatus {
            id: pid,
            name,
            state,
            started_at,
            workers: ws,
        });
    }
    Ok(out)
}
