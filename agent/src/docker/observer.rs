//! Other parts of the daemon that follow Docker (published ports that follow
//! a container's address, workers, containers attached by label) subscribe
//! here instead of editing the watcher: every engine's watcher tells every
//! observer what changed, after names and egress were applied.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use super::model::{DockerContainer, DockerNetwork};
use crate::api::types::DockerEngineRequest;

pub type Done<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// What an observer is told. Every method has a default that does nothing.
pub trait DockerObserver: Send + Sync + 'static {
    /// A running container appeared or changed (`old`: what it was).
    fn container_up<'a>(
        &'a self,
        _engine: &'a DockerEngineRequest,
        _container: &'a DockerContainer,
        _old: Option<&'a DockerContainer>,
        _networks: &'a HashMap<String, DockerNetwork>,
    ) -> Done<'a> {
        Box::pin(async {})
    }

    /// A container stopped running (died, was stopped or removed).
    fn container_down<'a>(
        &'a self,
        _engine: &'a DockerEngineRequest,
        _container: &'a DockerContainer,
    ) -> Done<'a> {
        Box::pin(async {})
    }

    fn network_up<'a>(
        &'a self,
        _engine: &'a DockerEngineRequest,
        _network: &'a DockerNetwork,
    ) -> Done<'a> {
        Box::pin(async {})
    }

    fn network_down<'a>(
        &'a self,
        _engine: &'a DockerEngineRequest,
        _network: &'a DockerNetwork,
    ) -> Done<'a> {
        Box::pin(async {})
    }
}

/// The observers, shared by every watcher; added at start-up (or later).
#[derive(Default, Clone)]
pub struct Observers(Arc<RwLock<Vec<Arc<dyn DockerObserver>>>>);

impl Observers {
    pub fn add(&self, observer: Arc<dyn DockerObserver>) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(observer);
    }

    pub fn all(&self) -> Vec<Arc<dyn DockerObserver>> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
