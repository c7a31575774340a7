//! The Docker engines netd serves: registered through the API (`docker up`
//! does it), saved in the state directory so a restarted netd serves them
//! again, each followed by its own watcher task. A component of the daemon:
//! it stops every watcher (which undoes what it set up) when the daemon
//! stops.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio_util::sync::CancellationToken;

use super::engine::EngineWatch;
use super::observer::{DockerObserver, Observers};
use super::services::DockerServices;
use crate::api::types::{DockerEngineRequest, DockerEngineView};
use crate::error::{Error, Result};
use crate::state::Store;

struct Running {
    watch: Arc<EngineWatch>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

pub struct DockerIntegration {
    store: Arc<Store>,
    services: Arc<DockerServices>,
    observers: Observers,
    labelled: super::labelled::LabelledBoard,
    engines: Mutex<HashMap<String, Running>>,
    /// Parent of every watcher's token; cancelled when the daemon stops.
    root: CancellationToken,
}

/// Engine names: like network names (they name files).
pub fn validate_engine_name(name: &str) -> Result<()> {
    crate::model::validate_network_name(name).map_err(|_| {
        Error::invalid(
            "docker engine name",
            name,
            "use [a-zA-Z0-9][a-zA-Z0-9_.-]*, at most 64 bytes",
        )
    })
}

impl DockerIntegration {
    pub fn new(store: Arc<Store>, services: Arc<DockerServices>) -> Arc<DockerIntegration> {
        Arc::new(DockerIntegration {
            store,
            services,
            observers: Observers::default(),
            labelled: Default::default(),
            engines: Mutex::default(),
            root: CancellationToken::new(),
        })
    }

    /// Follow Docker's containers and networks too (see `observer`).
    pub fn add_observer(&self, observer: Arc<dyn DockerObserver>) {
        self.observers.add(observer);
    }

    /// Containers attached by label (filled by `LabelAttach`).
    pub fn labelled(&self) -> super::labelled::LabelledBoard {
        self.labelled.clone()
    }

    fn engines(&self) -> MutexGuard<'_, HashMap<String, Running>> {
        self.engines.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The component: serve the saved engines, then wait for `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) -> Result<()> {
        let mut warnings = Vec::new();
        let saved = self.store.load_docker_engines(&mut warnings)?;
        for w in warnings {
            tracing::warn!("docker engines: {w}");
        }
        for req in saved {
            tracing::info!(engine = %req.name, socket = %req.socket.display(), "serving saved Docker engine");
            self.start(req);
        }
        stop.cancelled().await;
        self.root.cancel();
        let tasks: Vec<tokio::task::JoinHandle<()>> =
            self.engines().drain().map(|(_, r)| r.task).collect();
        for t in tasks {
            let _ = t.await;
        }
        Ok(())
    }

    fn start(&self, req: DockerEngineRequest) -> Arc<EngineWatch> {
        let watch = Arc::new(EngineWatch::new(
            req.clone(),
            self.services.clone(),
            self.observers.clone(),
        ));
        let stop = self.root.child_token();
        let task = tokio::spawn(watch.clone().run(stop.clone()));
        self.engines().insert(
            req.name.clone(),
            Running {
                watch: watch.clone(),
                stop,
                task,
            },
        );
        watch
    }

    /// Serve an engine; Ok(false, view) when the same one is served already.
    pub async fn register(&self, req: DockerEngineRequest) -> Result<(bool, DockerEngineView)> {
        validate_engine_name(&req.name)?;
        if !req.socket.is_absolute() {
            return Err(Error::invalid(
                "docker socket",
                req.socket.display(),
                "must be an absolute path",
            ));
        }
        if let Some(root) = &req.exec_root {
            if !root.is_absolute() {
                return Err(Error::invalid(
                    "exec root",
                    root.display(),
                    "must be an absolute path",
                ));
            }
        }
        if let Some(r) = self.engines().get(&req.name) {
            if r.watch.request() == &req {
                return Ok((false, r.watch.view()));
            }
            return Err(Error::Conflict(format!(
                "docker engine {:?} is already served with other settings (socket {}); remove it first",
                req.name,
                r.watch.request().socket.display()
            )));
        }
        if let Some(other) = self
            .engines()
            .values()
            .find(|r| r.watch.request().socket == req.socket)
        {
            return Err(Error::Conflict(format!(
                "the Docker socket {} is already served as engine {:?}",
                req.socket.display(),
                other.watch.request().name
            )));
        }
        let store = self.store.clone();
        let saved = req.clone();
        tokio::task::spawn_blocking(move || store.save_docker_engine(&saved))
            .await
            .map_err(|e| Error::Internal(format!("state writer: {e}")))??;
        let watch = self.start(req);
        Ok((true, watch.view()))
    }

    /// Stop serving an engine and undo what was set up for it.
    pub async fn unregister(&self, name: &str) -> Result<DockerEngineView> {
        let running = self
            .engines()
            .remove(name)
            .ok_or_else(|| Error::not_found("docker engine", name))?;
        let view = running.watch.view();
        running.stop.cancel();
        let _ = running.task.await;
        let store = self.store.clone();
        let n = name.to_string();
        tokio::task::spawn_blocking(move || store.remove_docker_engine(&n))
            .await
            .map_err(|e| Error::Internal(format!("state writer: {e}")))??;
        Ok(view)
    }

    pub fn list(&self) -> Vec<DockerEngineView> {
        let mut v: Vec<DockerEngineView> =
            self.engines().values().map(|r| r.watch.view()).collect();
        v.sort_by(|a, b| a.request.name.cmp(&b.request.name));
        v
    }

    pub fn get(&self, name: &str) -> Result<DockerEngineView> {
        self.engines()
            .get(name)
            .map(|r| r.watch.view())
            .ok_or_else(|| Error::not_found("docker engine", name))
    }
}
