//! Docker's container namespaces, seen as they appear: dockerd creates a
//! file under `EXEC_ROOT/netns/` for each sandbox and bind-mounts the
//! namespace on it before the container's process runs. Watching that
//! folder (inotify) lets netd open the container's DNS listener before the
//! container can send its first query - Docker's own event for the
//! container comes later, and inspecting a container that is starting
//! waits for the start to finish.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use conductor_dns::{BindOptions, ListenerSockets};
use futures::StreamExt;
use inotify::{Inotify, WatchMask};
use netns::Netns;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

/// Where Docker points the resolver of containers on user-defined networks.
pub const DOCKER_DNS: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(127, 0, 0, 11)), 53);

/// Call `found` for every namespace file in `dir`, those there now and those
/// created later, until `stop`.
pub async fn watch<F, Fut>(dir: PathBuf, stop: CancellationToken, found: F)
where
    F: Fn(PathBuf) -> Fut,
    Fut: Future<Output = ()>,
{
    // The folder appears with dockerd's first container.
    while !dir.is_dir() {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    let inotify = match Inotify::init() {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "inotify: container namespaces are found by Docker's events only");
            return;
        }
    };
    if let Err(e) = inotify
        .watches()
        .add(&dir, WatchMask::CREATE | WatchMask::MOVED_TO)
    {
        tracing::warn!(dir = %dir.display(), error = %e, "inotify watch");
        return;
    }
    let mut events = match inotify.into_event_stream([0u8; 4096]) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "inotify stream");
            return;
        }
    };
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries.flatten() {
            found(entry.path()).await;
        }
    }
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            e = events.next() => e,
        };
        match event {
            Some(Ok(e)) => {
                if let Some(name) = e.name {
                    found(dir.join(name)).await;
                }
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "inotify read");
                return;
            }
            None => return,
        }
    }
}

/// Open the namespace file (waiting a moment for dockerd's bind mount:
/// the file exists a little before it is a namespace) and bind the DNS
/// sockets inside it, off the async workers.
pub async fn bind_dns(path: &Path) -> Result<ListenerSockets> {
    let path = path.to_path_buf();
    let mut last = None;
    for _ in 0..50 {
        let p = path.clone();
        let opened = tokio::task::spawn_blocking(move || -> Result<ListenerSockets> {
            let ns = Netns::open_path(&p)
                .map_err(|e| Error::kernel(format!("open {}", p.display()), e))?;
            let bind = |freebind: bool| {
                ListenerSockets::bind(
                    DOCKER_DNS,
                    BindOptions {
                        freebind,
                        udp_only: false,
                    },
                )
            };
            // IP_FREEBIND: lo may not be up yet in a namespace this fresh.
            ns.run(|| bind(true).or_else(|_| bind(false)))
                .map_err(|e| Error::kernel(format!("enter {}", p.display()), e))?
                .map_err(|e| Error::Internal(format!("bind {DOCKER_DNS} in {}: {e}", p.display())))
        })
        .await
        .map_err(|e| Error::Internal(format!("namespace thread: {e}")))?;
        match opened {
            Ok(sockets) => return Ok(sockets),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(last.unwrap_or_else(|| Error::Internal("bind_dns: no attempt".into())))
}
