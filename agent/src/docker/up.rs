//! `conductor-netd docker up` and `docker down`, run by the CLI as root
//! (dockerd needs every capability, which the daemon gave up): find what
//! works here, print the plan and why, start dockerd detached, wait for its
//! API, and have conductor-netd serve names and egress for its networks.
//! Every step is recorded before it is taken, so `docker down` (or a failed
//! `up`) undoes exactly what was done: the dockerd by pid, the cgroup
//! mounts, Docker's leftover bridges, netd's rules for them.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::cgroups::{self, CgroupMounts};
use super::client;
use super::plan::{self, Findings, UpOptions, UpPlan};
use super::rules;
use crate::api::types::DockerEngineRequest;
use crate::api::Client;
use crate::doctor::{self, CheckId};
use crate::error::{Error, Result};

/// How long dockerd may take to answer its API (gVisor: seconds).
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long dockerd may take to stop before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// What `docker up` did, for `docker down`: RUN_DIR/record.json.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpRecord {
    pub name: String,
    pub dockerd: PathBuf,
    pub pid: Option<i32>,
    pub docker_socket: PathBuf,
    pub run_dir: PathBuf,
    #[serde(default)]
    pub data_root: PathBuf,
    pub cgroups: CgroupMounts,
    /// The netd socket used (to register with, or started on).
    pub netd_socket: Option<PathBuf>,
    /// The engine was registered with that netd.
    #[serde(default)]
    pub registered: bool,
    /// A conductor-netd `docker up` started itself (stopped by `down`).
    pub started_netd: Option<i32>,
    /// Docker manages iptables: what to put back after its rules go.
    #[serde(default)]
    pub docker_rules: Option<rules::Baseline>,
}

impl UpRecord {
    fn path(run_dir: &Path) -> PathBuf {
        run_dir.join("record.json")
    }

    fn save(&self) -> Result<()> {
        let path = Self::path(&self.run_dir);
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::Internal(format!("encode {}: {e}", path.display())))?;
        std::fs::write(&path, bytes).map_err(|e| Error::state("write", &path, e))
    }

    fn load(run_dir: &Path) -> Result<Option<UpRecord>> {
        let path = Self::path(run_dir);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| Error::state("parse", &path, std::io::Error::other(e))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::state("read", &path, e)),
        }
    }
}

/// The options of `docker up`, as the CLI got them.
#[derive(Debug, Clone)]
pub struct UpRequest {
    pub dockerd: Option<PathBuf>,
    pub data_root: Option<PathBuf>,
    pub docker_socket: PathBuf,
    pub extra_args: Vec<String>,
    pub dry_run: bool,
    /// conductor-netd's own socket.
    pub netd_socket: PathBuf,
    pub netd_bin: PathBuf,
}

/// What `docker up` reports at the end.
#[derive(Debug, Clone, Serialize)]
pub struct UpOutcome {
    pub plan: UpPlan,
    pub pid: Option<i32>,
    pub docker_host: String,
    pub started: bool,
}

/// The dockerd to run: the one given (it must be an executable file), or
/// `dockerd` on PATH.
fn resolve_dockerd(given: Option<&Path>) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    match given {
        Some(p) if executable(p) => Ok(p.to_path_buf()),
        Some(p) => Err(Error::invalid(
            "--dockerd",
            p.display(),
            if p.exists() {
                "not an executable file"
            } else {
                "no such file"
            },
        )),
        None => std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .map(|d| d.join("dockerd"))
            .find(|p| executable(p))
            .ok_or(Error::NotInstalled {
                what: "dockerd",
                looked_in: "PATH".into(),
                hint: "install Docker (Debian: apt-get install docker.io), or name one with --dockerd",
            }),
    }
}

fn dockerd_version(dockerd: &Path) -> Result<String> {
    let out = Command::new(dockerd)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            Error::invalid(
                "--dockerd",
                dockerd.display(),
                format!("cannot run it: {e}"),
            )
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.lines().next() {
        Some(line) if out.status.success() && line.contains("Docker") => Ok(line.to_string()),
        _ => Err(Error::invalid(
            "--dockerd",
            dockerd.display(),
            "`--version` does not answer like dockerd",
        )),
    }
}

/// Does an overlay mount work on the filesystem holding `dir`? Tried in a
/// scratch folder there, unmounted and removed again.
fn overlay_works(dir: &Path) -> std::result::Result<(), String> {
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    let base = dir.join(format!(".conductor-overlay-probe-{}", std::process::id()));
    let parts = ["lower", "upper", "work", "merged"].map(|p| base.join(p));
    let result = (|| {
        for p in &parts {
            std::fs::create_dir_all(p).map_err(|e| format!("create {}: {e}", p.display()))?;
        }
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            parts[0].display(),
            parts[1].display(),
            parts[2].display()
        );
        mount(
            Some("overlay"),
            &parts[3],
            Some("overlay"),
            MsFlags::empty(),
            Some(options.as_str()),
        )
        .map_err(|e| e.desc().to_string())?;
        let _ = umount2(&parts[3], MntFlags::MNT_DETACH);
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&base);
    result
}

/// Gather what the plan needs: the doctor report (the running netd's when it
/// has one, else probed here) and a few direct looks.
async fn findings(req: &UpRequest, dockerd: &Path, data_root: &Path) -> Result<Findings> {
    let netd = Client::new(&req.netd_socket);
    let report: Option<doctor::Report> = match netd.doctor().await {
        Ok(v) => serde_json::from_value(v).ok(),
        Err(_) => None,
    };
    let report = match report {
        Some(r) => r,
        None => tokio::task::spawn_blocking(doctor::run)
            .await
            .map_err(|e| Error::Internal(format!("doctor: {e}")))?,
    };
    std::fs::create_dir_all(data_root).map_err(|e| Error::state("create", data_root, e))?;
    Ok(Findings {
        platform: report.platform.kind.clone(),
        subscription_works: report.works(CheckId::NetlinkSubscription),
        masquerade_works: report.works(CheckId::IptablesMasquerade),
        cgroups: cgroups::inspect(Path::new(cgroups::CGROUP_ROOT)),
        overlay: overlay_works(data_root),
        preload: crate::preload_setup::find_library(),
        dockerd_version: dockerd_version(dockerd)?,
        resolvers: container_resolvers(),
    })
}

/// The machine's resolvers a container can reach (none when the file is
/// missing or names only loopback ones).
fn container_resolvers() -> Vec<std::net::IpAddr> {
    conductor_dns::ResolvConf::read(Path::new("/etc/resolv.conf"))
        .map(|(conf, _)| {
            conf.container_usable()
                .into_iter()
                .filter(|ns| ns.zone.is_none())
                .map(|ns| ns.addr)
                .collect()
        })
        .unwrap_or_default()
}

/// Refuse when something already answers on the Docker socket, or an
/// earlier `up` of this engine is still running.
fn check_free(plan: &UpPlan) -> Result<()> {
    if std::os::unix::net::UnixStream::connect(&plan.docker_socket).is_ok() {
        return Err(Error::Conflict(format!(
            "a Docker daemon already answers on {} (stop it, or choose another --docker-socket)",
            plan.docker_socket.display()
        )));
    }
    if let Some(rec) = UpRecord::load(&plan.run_dir)? {
        if rec.pid.is_some_and(alive) {
            return Err(Error::Conflict(format!(
                "docker up already started dockerd (pid {}) for {}; run `conductor-netd docker down` first",
                rec.pid.unwrap_or_default(),
                plan.docker_socket.display()
            )));
        }
    }
    Ok(())
}

fn alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

/// Make sure a conductor-netd answers on its socket; start one (detached,
/// its log next to dockerd's) when none does. Returns the pid it started.
async fn ensure_netd(req: &UpRequest, run_dir: &Path) -> Result<Option<i32>> {
    let client = Client::new(&req.netd_socket);
    if client.status().await.is_ok() {
        return Ok(None);
    }
    let log = File::create(run_dir.join("netd.log"))
        .map_err(|e| Error::state("create", run_dir.join("netd.log"), e))?;
    let child = Command::new(&req.netd_bin)
        .arg("--socket")
        .arg(&req.netd_socket)
        .arg("serve")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .process_group(0)
        .spawn()
        .map_err(|e| Error::Internal(format!("start conductor-netd: {e}")))?;
    let pid = child.id() as i32;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if client.status().await.is_ok() {
            return Ok(Some(pid));
        }
        if !alive(pid) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(Error::Unreachable(format!(
        "conductor-netd did not come up on {}: {}",
        req.netd_socket.display(),
        log_tail(&run_dir.join("netd.log"))
    )))
}

fn log_tail(path: &Path) -> String {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(_) => return String::new(),
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(1500)));
    let mut text = String::new();
    let _ = f.read_to_string(&mut text);
    text.lines()
        .rev()
        .take(5)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join(" | ")
}

pub async fn up(req: UpRequest, print: impl Fn(&str)) -> Result<UpOutcome> {
    let dockerd = resolve_dockerd(req.dockerd.as_deref())?;
    let opts = UpOptions {
        dockerd: dockerd.clone(),
        data_root: req.data_root.clone(),
        docker_socket: req.docker_socket.clone(),
        extra_args: req.extra_args.clone(),
    };
    // The paths first (the data root decides the overlay probe), and the
    // cheap refusals before anything is probed.
    let paths = plan::plan(&opts, &plan_paths_only())?;
    if !req.dry_run {
        check_free(&paths)?;
    }
    let found = findings(&req, &dockerd, &paths.data_root).await?;
    let plan = plan::plan(&opts, &found)?;
    print(&plan.text());
    if req.dry_run {
        return Ok(UpOutcome {
            docker_host: format!("unix://{}", plan.docker_socket.display()),
            plan,
            pid: None,
            started: false,
        });
    }
    std::fs::create_dir_all(plan.run_dir.join("exec"))
        .map_err(|e| Error::state("create", &plan.run_dir, e))?;
    let mut record = UpRecord {
        name: plan.name.clone(),
        dockerd: dockerd.clone(),
        pid: None,
        docker_socket: plan.docker_socket.clone(),
        run_dir: plan.run_dir.clone(),
        data_root: plan.data_root.clone(),
        cgroups: CgroupMounts::default(),
        netd_socket: None,
        registered: false,
        started_netd: None,
        docker_rules: None,
    };
    // A netd that already runs follows this engine even when Docker needs
    // neither names nor egress from it: published ports and the
    // *.localhost proxy follow its containers, and containers labelled
    // conductor.network=NET are attached by it (docker/labelled.rs).
    let netd_needed = plan.netd_dns || plan.netd_egress;
    let follow = netd_needed || Client::new(&req.netd_socket).status().await.is_ok();
    let started = async {
        if netd_needed {
            record.netd_socket = Some(req.netd_socket.clone());
            record.started_netd = ensure_netd(&req, &plan.run_dir).await?;
            record.save()?;
        } else if follow {
            record.netd_socket = Some(req.netd_socket.clone());
            record.save()?;
        }
        if !plan.mount_cgroups.is_empty() {
            record.cgroups =
                cgroups::mount_missing(Path::new(cgroups::CGROUP_ROOT), &plan.mount_cgroups)?;
            record.save()?;
        }
        if plan.docker_iptables {
            record.docker_rules = Some(rules::baseline());
            record.save()?;
        }
        record.pid = Some(start_dockerd(&plan)?);
        record.save()?;
        wait_ready(&plan, record.pid).await?;
        if follow {
            let client = Client::new(&req.netd_socket);
            client
                .register_docker(&DockerEngineRequest {
                    name: plan.name.clone(),
                    socket: plan.docker_socket.clone(),
                    exec_root: Some(plan.run_dir.join("exec")),
                    dns: plan.netd_dns,
                    egress: plan.netd_egress,
                    policy: plan.docker_iptables,
                })
                .await?;
            record.registered = true;
            record.save()?;
        }
        Ok::<(), Error>(())
    }
    .await;
    if let Err(e) = started {
        // Undo what was done; the error that stopped us is what counts.
        let _ = undo(&record).await;
        return Err(e);
    }
    Ok(UpOutcome {
        docker_host: format!("unix://{}", plan.docker_socket.display()),
        pid: record.pid,
        plan,
        started: true,
    })
}

/// Findings that only let the plan compute its paths.
fn plan_paths_only() -> Findings {
    Findings {
        platform: String::new(),
        subscription_works: true,
        masquerade_works: true,
        cgroups: cgroups::CgroupState::Unified,
        overlay: Ok(()),
        preload: None,
        dockerd_version: String::new(),
        resolvers: Vec::new(),
    }
}

fn start_dockerd(plan: &UpPlan) -> Result<i32> {
    std::fs::create_dir_all(&plan.data_root)
        .map_err(|e| Error::state("create", &plan.data_root, e))?;
    let log_path = plan.run_dir.join("dockerd.log");
    let log = File::create(&log_path).map_err(|e| Error::state("create", &log_path, e))?;
    let err = log
        .try_clone()
        .map_err(|e| Error::state("open", &log_path, e))?;
    let mut cmd = Command::new(&plan.dockerd);
    cmd.args(&plan.args)
        .env_remove("LD_PRELOAD")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        // Its own process group: the terminal's Ctrl-C is not its.
        .process_group(0);
    for (k, v) in &plan.env {
        cmd.env(k, v);
    }
    let child = cmd
        .spawn()
        .map_err(|e| Error::Internal(format!("start {}: {e}", plan.dockerd.display())))?;
    Ok(child.id() as i32)
}

async fn wait_ready(plan: &UpPlan, pid: Option<i32>) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if client::ping(&plan.docker_socket).await.is_ok() {
            return Ok(());
        }
        if pid.is_some_and(|p| !alive(p)) {
            return Err(Error::Internal(format!(
                "dockerd exited before its API answered: {}",
                log_tail(&plan.run_dir.join("dockerd.log"))
            )));
        }
        if Instant::now() > deadline {
            return Err(Error::Unreachable(format!(
                "dockerd did not answer on {} within {} s: {}",
                plan.docker_socket.display(),
                READY_TIMEOUT.as_secs(),
                log_tail(&plan.run_dir.join("dockerd.log"))
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `docker down`: stop what `docker up` started for this socket and leave
/// nothing behind.
pub async fn down(docker_socket: &Path) -> Result<Vec<String>> {
    let name = plan::engine_name(docker_socket);
    let run_dir = Path::new(plan::RUN_BASE).join(&name);
    let Some(record) = UpRecord::load(&run_dir)? else {
        return Err(Error::not_found(
            "engine started by `docker up` on",
            docker_socket.display().to_string(),
        ));
    };
    undo(&record).await
}

/// Undo a (possibly partial) `up`, collecting every failure.
async fn undo(record: &UpRecord) -> Result<Vec<String>> {
    let mut done = Vec::new();
    let mut failures = Vec::new();
    // Docker's bridges, while dockerd can still name them.
    let bridges = client::bridge_names(&record.docker_socket)
        .await
        .unwrap_or_default();
    if let (Some(netd), true) = (&record.netd_socket, record.registered) {
        match Client::new(netd).unregister_docker(&record.name).await {
            Ok(_) => done.push(format!("conductor-netd stopped serving {}", record.name)),
            Err(e) => failures.push(Error::from(e)),
        }
    }
    if let Some(pid) = record.pid {
        match stop_pid(pid, &record.dockerd).await {
            Ok(true) => done.push(format!("stopped dockerd (pid {pid})")),
            Ok(false) => {}
            Err(e) => failures.push(e),
        }
    }
    if let Some(baseline) = &record.docker_rules {
        let left = rules::remove(&bridges, baseline);
        if left.is_empty() {
            done.push("removed Docker's iptables rules".into());
        }
        failures.extend(left.into_iter().map(Error::Internal));
    }
    match super::links::delete_bridges(&bridges).await {
        Ok(removed) => done.extend(removed.into_iter().map(|b| format!("removed bridge {b}"))),
        Err(e) => failures.push(e),
    }
    for f in cgroups::unmount(&record.cgroups) {
        failures.push(Error::Internal(f));
    }
    if !record.cgroups.mounts.is_empty() {
        done.push("unmounted the cgroup hierarchy".into());
    }
    if let Some(pid) = record.started_netd {
        if let Some(netd) = &record.netd_socket {
            // Only when it serves nothing else.
            let idle = Client::new(netd)
                .status()
                .await
                .map(|s| s.networks.is_empty())
                .unwrap_or(true);
            let others = Client::new(netd)
                .docker_engines()
                .await
                .map(|e| !e.is_empty())
                .unwrap_or(false);
            if idle && !others {
                match stop_pid(pid, Path::new("conductor-netd")).await {
                    Ok(true) => done.push(format!("stopped conductor-netd (pid {pid})")),
                    Ok(false) => {}
                    Err(e) => failures.push(e),
                }
            }
        }
    }
    // A dockerd that had to be killed leaves its mounts: container
    // namespaces under the exec root (which keep their veths alive) and
    // its own bind mount of the data root.
    for f in unmount_under(&[record.run_dir.join("exec"), record.data_root.clone()]) {
        failures.push(Error::Internal(f));
    }
    let _ = std::fs::remove_dir_all(record.run_dir.join("exec"));
    let _ = std::fs::remove_file(UpRecord::path(&record.run_dir));
    Error::collect(format!("docker down {}", record.name), failures)?;
    Ok(done)
}

/// SIGTERM, then SIGKILL after a while; only if `pid` still runs `program`
/// (a pid can be reused). Ok(false) when it was already gone.
async fn stop_pid(pid: i32, program: &Path) -> Result<bool> {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    let wanted = program.file_name().map(|n| n.to_os_string());
    match (&exe, &wanted) {
        (Some(exe), Some(name)) if exe.file_name() == Some(name.as_os_str()) => {}
        (None, _) => return Ok(false),
        _ => {
            return Err(Error::Conflict(format!(
                "pid {pid} no longer runs {} (it runs {}); not stopping it",
                program.display(),
                exe.map(|e| e.display().to_string()).unwrap_or_default()
            )))
        }
    }
    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    let deadline = Instant::now() + STOP_TIMEOUT;
    while alive(pid) && Instant::now() < deadline {
        reap(pid);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if alive(pid) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        for _ in 0..100 {
            reap(pid);
            if !alive(pid) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(true)
}

/// A process we started ourselves stays a zombie (and "alive") until reaped.
fn reap(pid: i32) {
    let _ = nix::sys::wait::waitpid(
        nix::unistd::Pid::from_raw(pid),
        Some(nix::sys::wait::WaitPidFlag::WNOHANG),
    );
}

/// Unmount every mount at or below the given folders, deepest first.
fn unmount_under(roots: &[PathBuf]) -> Vec<String> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(PathBuf::from)
        .filter(|p| {
            roots
                .iter()
                .any(|r| !r.as_os_str().is_empty() && p.starts_with(r))
        })
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    let mut failures = Vec::new();
    for p in points {
        match nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => failures.push(format!("unmount {}: {}", p.display(), e.desc())),
        }
    }
    failures
}
