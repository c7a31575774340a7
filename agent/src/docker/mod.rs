//! Docker, through bollard: `docker up`/`down` (plan.rs, up.rs, cgroups.rs,
//! links.rs; run by the CLI as root), and in the daemon the engines it
//! serves (registry.rs) - one watcher per Docker daemon following its
//! events (engine.rs, model.rs) - and what it does for them (services.rs):
//! names on 127.0.0.11 inside every container (sandbox.rs opens the
//! listener as the namespace appears) and egress for every bridge network;
//! labelled.rs attaches containers labelled conductor.network=NET.

mod cgroups;
mod client;
mod engine;
mod labelled;
mod links;
pub mod model;
mod observer;
mod plan;
mod registry;
mod rules;
mod sandbox;
mod services;
mod up;

pub use client::{connect, ping};
pub use labelled::{LabelAttach, LabelledBoard, NETWORK_LABEL};
pub use observer::{DockerObserver, Done};
pub use plan::{engine_name, UpPlan, DEFAULT_SOCKET};
pub use registry::{validate_engine_name, DockerIntegration};
pub use services::DockerServices;
pub use up::{down, up, UpOutcome, UpRequest};

/// Docker's socket as the `docker` CLI finds it: DOCKER_HOST (unix://
/// only), else the default.
pub fn default_socket() -> std::path::PathBuf {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(std::path::PathBuf::from))
        .unwrap_or_else(|| std::path::PathBuf::from(DEFAULT_SOCKET))
}
