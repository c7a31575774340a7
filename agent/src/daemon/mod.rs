//! `conductor-netd serve`: check privileges, open the state and the socket,
//! probe the environment, drop capabilities, reconcile, then run the
//! components under one supervisor.

mod supervisor;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::api::peer::{self, Access};
use crate::api::{router, server};
use crate::config::Config;
use crate::doctor;
use crate::error::{Error, Result};
use crate::kernel::{Kernel, NetnsKernel};
use crate::platform;
use crate::privileges;
use crate::service::Service;
use crate::state::Store;

pub use supervisor::Supervisor;

/// How long in-flight work may take to finish at shutdown.
const DRAIN: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    pub config: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    /// Keep everything in memory instead of touching the kernel (tests):
    /// targets resolve to plain files, see `kernel::fake`.
    #[cfg(feature = "testing")]
    pub fake_kernel: bool,
    /// Skip the start-up probe.
    pub no_probe: bool,
    /// The `*.localhost` proxy's listener (overrides the config file).
    pub localhost_proxy: Option<std::net::SocketAddr>,
    /// Docker's network plugin socket (overrides the config file).
    pub docker_plugin: Option<PathBuf>,
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
    if let Some(a) = opts.localhost_proxy {
        config.localhost_proxy = Some(a);
    }
    if let Some(p) = &opts.docker_plugin {
        config.docker_plugin = Some(p.clone());
    }
    Ok(config)
}

impl ServeOptions {
    fn fake_kernel(&self) -> bool {
        #[cfg(feature = "testing")]
        return self.fake_kernel;
        #[cfg(not(feature = "testing"))]
        false
    }
}

pub fn serve(opts: ServeOptions) -> Result<()> {
    let config = effective_config(&opts)?;
    let fake_kernel = opts.fake_kernel();
    if !fake_kernel {
        privileges::require()?;
    }
    raise_fd_limit();
    let store =
        Store::open(&config.state_dir, config.fsync)?.with_endpoint_fsync(config.fsync_endpoints);
    let group = config
        .socket_group
        .as_deref()
        .map(peer::resolve_group)
        .transpose()?;
    let listener = server::bind(&config.socket, config.socket_mode_bits()?, group)?;
    let socket_path = config.socket.clone();
    let result = (|| {
        let probe = if !fake_kernel && config.startup_probe {
            let report = doctor::run();
            tracing::info!(
                platform = %report.platform.kind,
                netlink_subscription = report.works(doctor::CheckId::NetlinkSubscription),
                iptables_snat = report.works(doctor::CheckId::IptablesSnat),
                iptables_masquerade = report.works(doctor::CheckId::IptablesMasquerade),
                iptables_redirect = report.works(doctor::CheckId::IptablesRedirect),
                nftables = report.works(doctor::CheckId::Nftables),
                "environment probed"
            );
            Some(report)
        } else {
            None
        };
        if !fake_kernel {
            let gvisor = probe.as_ref().is_some_and(|p| p.platform.is_gvisor())
                || platform::detect().is_gvisor();
            let extra = if gvisor {
                privileges::KEPT_IN_GVISOR
            } else {
                &[]
            };
            let dropped = privileges::drop_unneeded(extra)?;
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
            readonly_group: config
                .socket_readonly_group
                .as_deref()
                .map(peer::resolve_group)
                .transpose()?,
            socket_mode: config.socket_mode_bits()?,
        };
        rt.block_on(async move {
            #[cfg(feature = "testing")]
            if fake_kernel {
                let kernel =
                    crate::kernel::fake::FakeKernel::new(config.state_dir.join("fake-netns"));
                return run(kernel, store, config, listener, access, None).await;
            }
            {
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
    let limits = server::Limits::for_daemon(&config);
    let svc = Arc::new(Service::new(kernel, store, config)?);
    let probe_report = probe.clone();
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
    let mut components = Supervisor::new();
    let reaper = svc.clone();
    components.spawn("detach reaper", move |stop| reaper.run_reaper(stop));
    let docker = match &probe_report {
        Some(report) => Some(networking(&svc, report, &mut components).await),
        None => None,
    };
    let ports = crate::ports::Ports::new(svc.store(), svc.clone());
    if let Some(d) = &docker {
        d.add_observer(Arc::new(ports.observer()));
    }
    ports.restore().await?;
    if let Some(addr) = svc.config().localhost_proxy {
        let proxy = crate::proxy::LocalhostProxy::bind(addr, ports.clone())?;
        tracing::info!(%addr, "*.localhost proxy listening");
        components.spawn("localhost proxy", move |stop| proxy.serve(stop));
    }
    let plugin_socket = match svc.config().docker_plugin.clone() {
        Some(path) => Some(docker_plugin(&svc, path, limits, &mut components).await?),
        None => None,
    };
    let app = router::with_parts(svc.clone(), docker, Some(ports));
    components.spawn("api", move |stop| {
        server::serve(app, listener, access, limits, stop, DRAIN)
    });
    tracing::info!(socket = %socket.display(), environment = %svc.kernel().environment(), "serving");
    let result = components.run(DRAIN).await;
    if let Some(path) = plugin_socket {
        let _ = std::fs::remove_file(path);
    }
    result
}

/// Docker's network plugin on its own socket, for root only (dockerd).
async fn docker_plugin<K: Kernel>(
    svc: &Arc<Service<K>>,
    path: PathBuf,
    limits: server::Limits,
    components: &mut Supervisor,
) -> Result<PathBuf> {
    let plugin = crate::plugin::Plugin::open(svc.clone()).await?;
    let listener = server::bind(&path, 0o600, None)?;
    let access = Access {
        group: None,
        readonly_group: None,
        socket_mode: 0o600,
    };
    let router = plugin.router();
    tracing::info!(socket = %path.display(), "docker network plugin listening");
    components.spawn("docker plugin", move |stop| {
        server::serve(router, listener, access, limits, stop, DRAIN)
    });
    Ok(path)
}

/// Names and egress (for conductor networks and Docker's): the DNS engine,
/// the egress backend chosen from the doctor report, and the Docker
/// integration that applies them to Docker's networks. A part that cannot
/// start here is logged and left out; the rest still runs.
async fn networking<K: Kernel>(
    svc: &Arc<Service<K>>,
    report: &doctor::Report,
    components: &mut Supervisor,
) -> Arc<crate::docker::DockerIntegration> {
    let config = svc.config();
    let dns = match dns_engine(config) {
        Ok(e) => Some(e),
        Err(e) => {
            tracing::warn!(error = %e, "no DNS engine: names are not served");
            None
        }
    };
    let settings = crate::egress::EgressSettings {
        requested: config.egress_backend().ok().flatten(),
        proxy_port: config.egress_proxy_port,
        proxy_port6: config.egress_proxy_port6,
    };
    let egress = match crate::egress::Egress::start(report, settings, svc.policies().clone()).await
    {
        Ok(e) => {
            let e = Arc::new(e);
            e.apply_policy_changes();
            let serving = e.clone();
            components.spawn("egress", move |stop| serving.serve(stop));
            Some(e)
        }
        Err(e) => {
            tracing::warn!(error = %e, "no egress backend: nothing leaves the bridges");
            None
        }
    };
    let conductor = Arc::new(
        crate::network_services::NetworkServices::new(dns.clone(), egress.clone())
            .with_policies(svc.policies().clone()),
    );
    svc.set_observer(conductor).await;
    let services = Arc::new(
        crate::docker::DockerServices::new(dns, egress).with_policies(svc.policies().clone()),
    );
    let docker = crate::docker::DockerIntegration::new(svc.store(), services);
    docker.add_observer(Arc::new(crate::docker::LabelAttach::new(
        svc.clone(),
        docker.labelled(),
    )));
    docker.add_observer(Arc::new(crate::workers::ParentFollower::default()));
    let running = docker.clone();
    components.spawn("docker", move |stop| running.run(stop));
    docker
}

/// The DNS engine, forwarding to the configured resolvers or to those of
/// /etc/resolv.conf (loopback ones included: netd's own sockets live in
/// its namespace, where they answer).
fn dns_engine(config: &Config) -> Result<conductor_dns::Engine> {
    let upstreams = if config.dns_upstreams.is_empty() {
        let (conf, problems) =
            conductor_dns::ResolvConf::read(std::path::Path::new("/etc/resolv.conf"))
                .map_err(|e| Error::Internal(format!("/etc/resolv.conf: {e}")))?;
        for p in problems {
            tracing::warn!("/etc/resolv.conf: {p}");
        }
        conf.upstreams()
    } else {
        config.dns_upstreams.clone()
    };
    conductor_dns::Engine::new(conductor_dns::EngineConfig {
        upstreams,
        ..conductor_dns::EngineConfig::default()
    })
    .map_err(|e| Error::Internal(format!("DNS engine: {e}")))
}

/// Many clients (and later many forwarded connections) need many fds: take
/// the hard limit as the soft one.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(error = %e, soft, hard, "could not raise the fd limit");
            }
        }
    }
}
