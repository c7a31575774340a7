//! What the worker commands show: workers and parents as listed by label,
//! and their table forms.

use std::collections::HashMap;
use std::fmt::Write;

use serde::Serialize;

/// Labels that mark conductor-net's containers; workers are found by
/// these, never by name.
pub const ROLE_LABEL: &str = "conductor.role";
pub const PARENT_LABEL: &str = "conductor.parent";
pub const ROLE_WORKER: &str = "worker";
pub const ROLE_PARENT: &str = "parent";

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct WorkerInfo {
    pub id: String,
    pub name: String,
    /// The parent's full id (the `conductor.parent` label).
    pub parent: String,
    pub image: String,
    /// Docker's state: created, running, exited, ...
    pub state: String,
    /// Docker's status line: "Up 3 minutes", "Exited (0) 2 seconds ago".
    pub status: String,
    /// Unix seconds.
    pub created: i64,
}

impl WorkerInfo {
    pub fn from_summary(c: &bollard::models::ContainerSummary) -> WorkerInfo {
        let label = |k: &str| {
            c.labels
                .as_ref()
                .and_then(|l: &HashMap<String, String>| l.get(k))
                .cloned()
                .unwrap_or_default()
        };
        WorkerInfo {
            id: c.id.clone().unwrap_or_default(),
            name: c
                .names
                .as_ref()
                .and_then(|n| n.first())
                .map(|n| n.trim_start_matches('/').to_string())
                .unwrap_or_default(),
            parent: label(PARENT_LABEL),
            image: c.image.clone().unwrap_or_default(),
            state: c.state.map(|s| s.to_string()).unwrap_or_default(),
            status: c.status.clone().unwrap_or_default(),
            created: c.created.unwrap_or_default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ParentStatus {
    pub id: String,
    pub name: String,
    /// Docker's state, or "missing" when the container is gone.
    pub state: String,
    pub started_at: Option<String>,
    pub workers: Vec<WorkerStatus>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct WorkerStatus {
    #[serde(flatten)]
    pub worker: WorkerInfo,
    pub started_at: Option<String>,
    /// Set once the worker has exited.
    pub exit_code: Option<i64>,
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

pub fn workers_table(workers: &[WorkerInfo]) -> String {
    let mut out = format!(
        "{:<14}{:<28}{:<14}{:<20}{}\n",
        "ID", "NAME", "PARENT", "IMAGE", "STATUS"
    );
    for w in workers {
        let _ = writeln!(
            out,
            "{:<14}{:<28}{:<14}{:<20}{}",
            short(&w.id),
            w.name,
            short(&w.parent),
            w.image,
            w.status
        );
    }
    out
}

pub fn status_text(parents: &[ParentStatus]) -> String {
    let mut out = String::new();
    if parents.is_empty() {
        out.push_str("no workers\n");
    }
    for p in parents {
        let since = p
            .started_at
            .as_deref()
            .map(|s| format!(", started {s}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "parent {} ({}): {}{since}",
            p.name,
            short(&p.id),
            p.state
        );
        for w in &p.workers {
            let code = w
                .exit_code
                .map(|c| format!(", exit code {c}"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  worker {} ({}): {}{code}",
                w.worker.name,
                short(&w.worker.id),
                w.worker.status
            );
        }
    }
    out
}
