//! Link deletions off the async workers. The kernel executes a netlink
//! request inside the `sendmsg` that carries it, and a veth deletion waits
//! there for an RCU grace period (~20 ms): on a tokio worker that would
//! stall every other request. So deletions run on a few threads of their
//! own, each keeping one netlink socket (and a small runtime to drive it)
//! for its whole life, up to `netlink_connections` at once: their waits
//! overlap, and no deletion pays for a new socket or runtime.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use netns::Handle;
use tokio::sync::oneshot;

use crate::error::{Error, Result};

struct Job {
    link: String,
    done: oneshot::Sender<Result<bool>>,
}

struct Pool {
    /// Threads started so far, and how many wait for a job.
    started: usize,
    idle: usize,
}

/// Up to `max` deletion threads, started when first needed.
pub struct Deletions {
    max: usize,
    queue: mpsc::Sender<Job>,
    jobs: Arc<Mutex<mpsc::Receiver<Job>>>,
    pool: Arc<Mutex<Pool>>,
}

impl Deletions {
    pub fn new(max: usize) -> Deletions {
        let (queue, jobs) = mpsc::channel();
        Deletions {
            max: max.max(1),
            queue,
            jobs: Arc::new(Mutex::new(jobs)),
            pool: Arc::new(Mutex::new(Pool {
                started: 0,
                idle: 0,
            })),
        }
    }

    /// Delete a link by name in the daemon's namespace (which every thread
    /// of the process shares); Ok(false) if it was already gone.
    pub async fn delete_link(&self, link: &str) -> Result<bool> {
        let (done, answer) = oneshot::channel();
        self.grow()?;
        self.queue
            .send(Job {
                link: link.to_string(),
                done,
            })
            .map_err(|_| Error::Internal("the deletion threads are gone".into()))?;
        answer
            .await
            .map_err(|_| Error::Internal(format!("deletion of {link:?} was dropped")))?
    }

    /// Start another thread when none is idle and the cap allows.
    fn grow(&self) -> Result<()> {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if pool.idle > 0 || pool.started >= self.max {
            if pool.idle > 0 {
                pool.idle -= 1;
            }
            return Ok(());
        }
        pool.started += 1;
        drop(pool);
        let jobs = self.jobs.clone();
        let pool = self.pool.clone();
        std::thread::Builder::new()
            .name("netd-delete".into())
            .spawn(move || worker(jobs, pool))
            .map(drop)
            .map_err(|e| Error::Internal(format!("start a deletion thread: {e}")))
    }
}

fn worker(jobs: Arc<Mutex<mpsc::Receiver<Job>>>, pool: Arc<Mutex<Pool>>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build();
    let (runtime, handle) = match runtime.map_err(|e| e.to_string()).and_then(|rt| {
        let h = rt.block_on(async { Handle::current() });
        h.map(|h| (rt, h)).map_err(|e| e.to_string())
    }) {
        Ok(pair) => pair,
        Err(e) => {
            // Answer every job this thread would have taken with the reason.
            tracing::error!(error = %e, "deletion thread could not open a netlink socket");
            while let Some(job) = next_job(&jobs) {
                let _ = job.done.send(Err(Error::Internal(format!(
                    "deletion thread: no netlink socket: {e}"
                ))));
            }
            return;
        }
    };
    loop {
        let Some(job) = next_job(&jobs) else { return };
        let result = runtime.block_on(delete(&handle, &job.link));
        let _ = job.done.send(result);
        pool.lock().unwrap_or_else(|p| p.into_inner()).idle += 1;
    }
}

fn next_job(jobs: &Mutex<mpsc::Receiver<Job>>) -> Option<Job> {
    jobs.lock().unwrap_or_else(|p| p.into_inner()).recv().ok()
}

async fn delete(h: &Handle, name: &str) -> Result<bool> {
    let link = match h.link_by_name(name).await {
        Ok(l) => l,
        Err(e) if e.is_not_found() => return Ok(false),
        Err(e) => return Err(Error::kernel(format!("look up link {name:?}"), e)),
    };
    match h.delete_link(link.index).await {
        Ok(()) => Ok(true),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(Error::kernel(format!("delete link {name:?}"), e)),
    }
}
