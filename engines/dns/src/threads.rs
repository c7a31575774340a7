//! The engine's own threads, each running a current-thread tokio runtime
//! that serves the listeners placed on it.
//!
//! Why not the daemon's runtime: on a multi-threaded runtime each query's
//! wake-up hops between workers; one thread that owns its sockets answers
//! ~1.7x more queries per second on this 2-core machine (bench-dns), the
//! way dnsmasq's single loop does, and the daemon's workers stay free.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::error::{Error, Result};

pub(crate) struct EngineThreads {
    handles: Vec<Handle>,
    next: AtomicUsize,
    stops: Mutex<Vec<oneshot::Sender<()>>>,
}

impl EngineThreads {
    pub(crate) fn start(count: usize) -> Result<Self> {
        let mut handles = Vec::new();
        let mut stops = Vec::new();
        for i in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|source| Error::Thread { source })?;
            handles.push(runtime.handle().clone());
            let (stop, stopped) = oneshot::channel::<()>();
            stops.push(stop);
            std::thread::Builder::new()
                .name(format!("conductor-dns-{i}"))
                .spawn(move || {
                    // Returns when the engine is dropped; dropping the
                    // runtime then drops every task and closes its sockets.
                    let _ = runtime.block_on(stopped);
                })
                .map_err(|source| Error::Thread { source })?;
        }
        Ok(Self {
            handles,
            next: AtomicUsize::new(0),
            stops: Mutex::new(stops),
        })
    }

    /// The runtime for the next listener (round robin).
    pub(crate) fn pick(&self) -> &Handle {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        &self.handles[i]
    }
}

impl Drop for EngineThreads {
    fn drop(&mut self) {
        let stops = std::mem::take(&mut *self.stops.lock().unwrap_or_else(PoisonError::into_inner));
        for stop in stops {
            let _ = stop.send(());
        }
    }
}
