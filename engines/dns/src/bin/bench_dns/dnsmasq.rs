//! dnsmasq as the comparison: a child process on its own loopback port,
//! serving the same names from a hosts file and forwarding to the same stub
//! upstream; stopped by its pid (the guard kills it even on a panic).

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Dnsmasq {
    child: Child,
    pub addr: SocketAddr,
    hosts: PathBuf,
}

impl Dnsmasq {
    /// Starts `binary` serving `names` (name, address) with TTL `ttl`,
    /// forwarding the rest to `upstream`.
    pub fn start(
        binary: &Path,
        preload: Option<&Path>,
        names: &[(String, Ipv4Addr)],
        ttl: u32,
        upstream: SocketAddr,
    ) -> Result<Self, String> {
        let port = free_port()?;
        let hosts = std::env::temp_dir().join(format!("bench-dns-hosts-{}", std::process::id()));
        let mut text = String::new();
        for (name, addr) in names {
            let _ = writeln!(text, "{addr} {name}");
        }
        std::fs::write(&hosts, text).map_err(|e| format!("write {}: {e}", hosts.display()))?;
        // Its log goes to a file: a pipe nobody reads could block it.
        let log_path = hosts.with_extension("log");
        let log = std::fs::File::create(&log_path)
            .map_err(|e| format!("create {}: {e}", log_path.display()))?;
        let mut command = Command::new(binary);
        if let Some(preload) = preload {
            command.env("LD_PRELOAD", preload);
        }
        let child = command
            .args([
                "--no-daemon",
                "--conf-file=/dev/null",
                "--user=root",
                "--pid-file=",
                &format!("--port={port}"),
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--no-resolv",
                "--no-hosts",
                &format!("--addn-hosts={}", hosts.display()),
                &format!("--server=127.0.0.1#{}", upstream.port()),
                &format!("--local-ttl={ttl}"),
                "--cache-size=10000",
                "--dns-forward-max=1000",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start {}: {e} (Debian package dnsmasq-base)",
                    binary.display()
                )
            })?;
        let mut this = Self {
            child,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            hosts,
        };
        this.wait_ready().map_err(|e| {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            format!("{e}; its log: {}", log.trim())
        })?;
        let _ = std::fs::remove_file(&log_path);
        Ok(this)
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let probe = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        probe
            .set_read_timeout(Some(Duration::from_millis(100)))
            .map_err(|e| e.to_string())?;
        // A bare query header for c0 is enough to see it answer.
        let query = crate::load::query(1, "c0.");
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("dnsmasq exited at start: {status}"));
            }
            let _ = probe.send_to(&query, self.addr);
            let mut buf = [0u8; 512];
            if probe.recv(&mut buf).is_ok() {
                return Ok(());
            }
        }
        Err("dnsmasq did not answer within 5 s".into())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.hosts);
    }
}

fn free_port() -> Result<u16, String> {
    let socket = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(socket.local_addr().map_err(|e| e.to_string())?.port())
}

/// Resident memory of a process, from /proc (kB).
pub fn rss_kb(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
