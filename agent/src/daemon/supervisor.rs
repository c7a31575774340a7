//! The daemon's components (API server, reaper, and later Docker watcher,
//! DNS, egress, forwarders) start and stop the same way: each is a task
//! given a child of one cancellation token. A signal, or any component
//! ending with an error, cancels the token; every component then finishes
//! what it has in flight and returns, within a deadline.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

pub struct Supervisor {
    token: CancellationToken,
    tasks: JoinSet<(&'static str, Result<()>)>,
}

impl Default for Supervisor {
    fn default() -> Self {
        Self::new()
    }
}

impl Supervisor {
    pub fn new() -> Supervisor {
        Supervisor {
            token: CancellationToken::new(),
            tasks: JoinSet::new(),
        }
    }

    /// Start a component; it must return once its token is cancelled.
    pub fn spawn<F>(&mut self, name: &'static str, component: impl FnOnce(CancellationToken) -> F)
    where
        F: Future<Output = Result<()>> + Send + 'static,
    {
        let work = component(self.token.child_token());
        self.tasks.spawn(async move { (name, work.await) });
        tracing::debug!(component = name, "started");
    }

    /// Run until SIGTERM/SIGINT or until a component stops on its own;
    /// then stop every component, waiting up to `deadline` for them. The
    /// first component error is returned.
    pub async fn run(mut self, deadline: Duration) -> Result<()> {
        let mut first_error = None;
        tokio::select! {
            _ = shutdown_signal() => tracing::info!("shutting down"),
            ended = self.tasks.join_next() => {
                if let Some(outcome) = ended {
                    first_error = record(outcome, first_error);
                }
                tracing::info!("a component stopped; shutting down the others");
            }
        }
        self.token.cancel();
        let drained = tokio::time::timeout(deadline, async {
            while let Some(outcome) = self.tasks.join_next().await {
                first_error = record(outcome, first_error.take());
            }
            first_error
        })
        .await;
        match drained {
            Ok(Some(e)) => Err(e),
            Ok(None) => Ok(()),
            Err(_) => {
                tracing::warn!(
                    "components still running after {} s; leaving them",
                    deadline.as_secs()
                );
                self.tasks.abort_all();
                Ok(())
            }
        }
    }
}

fn record(
    outcome: std::result::Result<(&'static str, Result<()>), tokio::task::JoinError>,
    first: Option<Error>,
) -> Option<Error> {
    match outcome {
        Ok((name, Ok(()))) => {
            tracing::debug!(component = name, "stopped");
            first
        }
        Ok((name, Err(e))) => {
            tracing::error!(component = name, error = %e, "component failed");
            first.or(Some(e))
        }
        Err(e) => {
            tracing::error!(error = %e, "component panicked or was aborted");
            first.or(Some(Error::Internal(format!("component task: {e}"))))
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => {},
                _ = i.recv() => {},
            }
        }
        _ => std::future::pending::<()>().await,
    }
}
