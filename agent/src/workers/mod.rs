//! Workers: containers that share a parent container's network namespace
//! (network mode `container:<parent id>`), so they reach its services on
//! localhost and use its DNS and egress. The CLI (`conductor-netd worker
//! ...`) talks to Docker directly through bollard; workers are found by
//! their labels (`conductor.role=worker`, `conductor.parent=<id>`), never
//! by name.
//!
//! Parts: container.rs (a container's netns for `attach --container`), connect.rs (DOCKER_HOST, socket checks, version negotiation),
//! spec.rs (parsing flags), spawn.rs (creating workers and parents),
//! query.rs (listing, stopping, status), run.rs (foreground run, logs,
//! exec), io.rs (streams, stdin, terminal), model.rs (what is shown),
//! follow.rs (in netd: workers re-created when their parent restarts).

mod connect;
mod container;
mod error;
mod follow;
mod io;
mod model;
mod query;
mod run;
mod spawn;
mod spec;

pub use connect::{connect, connect_env, socket_from};
pub use container::{container_netns, ContainerNetns};
pub use error::{Result, WorkerError};
pub use follow::{ParentFollower, PARENT_NAME_LABEL, RESTART_LABEL, RESTART_RECREATE};
pub use model::{
    status_text, workers_table, ParentStatus, WorkerInfo, WorkerStatus, PARENT_LABEL, ROLE_LABEL,
    ROLE_PARENT, ROLE_WORKER,
};
pub use query::{list, status, stop, stop_all, worker_id};
pub use run::{exec, logs, run};
pub use spawn::{check_image, create_parent, running_parent, spawn_detached, Created, WorkerSpec};
pub use spec::{parse_cpus, parse_env, parse_memory, validate_name, Volume};
