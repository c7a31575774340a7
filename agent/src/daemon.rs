//! `conductor-netd serve`: check privileges, open the state and the socket,
//! probe the environment, drop capabilities, reconcile, serve.

use std::path::PathBuf;
use std::sync::Arc;

use crate::api::server::{self, Access};
use crate::config::Config;
use crate::doctor;
use crate::error::{Error, Result};
use crate::fake::FakeKernel;
use crate::kernel::Kernel;
use crate::platform;
use crate::privileges;
use crate::real::NetnsKernel;
use crate::service::Service;
use crate::state::Store;

#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    pub config: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    /// Keep everything in memory instead of touching the kernel (tests and
    /// unprivileged trials): targets resolve to plain files, see `fake`.
    pub fake_kernel: bool,
    /// Skip the start-up probe.
    pub no_probe: bool,
}

/// The effective configuration: file, then command line.
pub fn effective_config(opts: &ServeOptions) -> Result<Config> {
    let mut config = Config::load(opts.config.as_deref())?;
    if let Some(s) = &opts.socket {
        config.socket = s.clone();
    }
    if let Some(d) = &opts.state_dir {
        config.state_dir = d.clone();
    }
    if opts.no_probe {
        config.startup_probe = false;
    }
    Ok(config)
}

pub fn serve(opts: ServeOptions) -> Result<()> {
    let config = effective_config(&opts)?;
    if !opts.fake_kernel {
        privileges::require()?;
    }
    let store =
        Store::open(&config.state_dir, config.fsync)?.with_endpoint_fsync(config.fsync_endpoints);
    let group = config
        .socket_group
        .as_deref()
        .map(server::resolve_group)
        .transpose()?;
    let listener = server::bind(&config.socket, config.socket_mode_bits()?, group)?;
    let socket_path = config.socket.clone();
    let result = (|| {
        let probe = if !opts.fake_kernel && config.startup_probe {
            let report = doctor::run();
            tracing::info!(
                platform = %report.platform.kind,
                netlink_subscription = report.works("netlink_subscription"),
                iptables_snat = report.works("iptables_snat"),
                iptables_masquerade = report.works("iptables_masquerade"),
                nftables = report.works("nftables"),
                "environment probed"
            );
            Some(report)
        } else {
            None
        };
        if !opts.fake_kernel {
            let dropped = privileges::drop_unneeded()?;
            tracing::info!(
                kept = ?privileges::KEPT.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
                dropped = dropped.len(),
                "capabilities dropped"
            );
        }
        // Blocking threads: veth deletions (at most netlink_connections at
        // once) and fsyncs; a small cap keeps the thread count (and RSS) low.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .max_blocking_threads(config.netlink_connections + 8)
            .thread_keep_alive(std::time::Duration::from_secs(2))
            .thread_name("netd")
            .build()
            .map_err(|e| Error::Internal(format!("start the runtime: {e}")))?;
        let access = Access {
            group,
            socket_mode: config.socket_mode_bits()?,
        };
        rt.block_on(async move {
            if opts.fake_kernel {
                let kernel = FakeKernel::new(config.state_dir.join("fake-netns"));
                run(kernel, store, config, listener, access, None).await
            } else {
                let platform = probe
                    .as_ref()
                    .map(|p| p.platform.clone())
                    .unwrap_or_else(platform::detect);
                let kernel = NetnsKernel::new(config.netlink_connections, platform)?;
                run(kernel, store, config, listener, access, probe).await
            }
        })
    })();
    let _ = std::fs::remove_file(&socket_path);
    result
}

async fn run<K: Kernel>(
    kernel: K,
    store: Store,
    config: Config,
    listener: std::os::unix::net::UnixListener,
    access: Access,
    probe: Option<doctor::Report>,
) -> Result<()> {
    let socket = config.socket.clone();
    let svc = Arc::new(Service::new(kernel, store, config)?);
    svc.start_reaper();
    if let Some(p) = probe {
        svc.set_probe(serde_json::to_value(p).unwrap_or_default());
    }
    let report = svc.reconcile().await?;
    tracing::info!(
        networks = report.networks,
        endpoints_kept = report.endpoints_kept,
        endpoints_removed = report.endpoints_removed.len(),
        bridges_recreated = ?report.bridges_recreated,
        orphan_links_removed = report.orphan_links_removed.len(),
        "state reconciled"
    );
    for w in &report.warnings {
        tracing::warn!("reconcile: {w}");
    }
    tracing::info!(socket = %socket.display(), environment = %svc.kernel().environment(), "serving");
    server::serve(svc, listener, access, shutdown_signal()).await?;
    tracing::info!("shutting down");
    Ok(())
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
