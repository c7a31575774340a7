//! A conductor-netd daemon with its in-memory kernel (`serve
//! --fake-kernel`, no privileges needed) on its own socket and state
//! directory, and the client commands the tests run against it.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

use crate::netd_bin;

/// The binary under test, built with the `testing` feature.
pub fn bin() -> PathBuf {
    static BUILD: Once = Once::new();
    let path = netd_bin();
    BUILD.call_once(|| {
        // Built with the test-only paths (`serve --fake-kernel`); a binary
        // from a plain build lacks them, so this always runs (a no-op when
        // cargo's own test build already made it).
        if std::env::var_os("CONDUCTOR_NETD_BIN").is_none() {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.args([
                "build",
                "-p",
                "conductor-netd",
                "--features",
                "testing",
                "--bin",
                "conductor-netd",
            ]);
            if path.parent().and_then(|p| p.file_name()) == Some("release".as_ref()) {
                cmd.arg("--release");
            }
            let status = cmd.status().expect("run cargo build");
            assert!(status.success(), "building conductor-netd failed");
        }
    });
    assert!(path.exists(), "{} is missing", path.display());
    path
}

/// Exit codes by error class (see `conductor_netd::error::exit`).
pub const INVALID: i32 = 3;
pub const NOT_FOUND: i32 = 4;
pub const CONFLICT: i32 = 5;
pub const PERMISSION: i32 = 6;
pub const UNREACHABLE: i32 = 7;

pub fn netd() -> Command {
    let mut c = Command::new(bin());
    c.env_remove("CONDUCTOR_NETD_SOCKET");
    c
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

pub struct Daemon {
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub state: PathBuf,
    child: Option<Child>,
    launch: Launch,
}

/// How a daemon is started besides its configuration.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    /// `ulimit -n` (soft and hard) for the daemon.
    pub fd_limit: Option<u64>,
    /// Extra environment (e.g. `CONDUCTOR_NETD_FAULT`).
    pub env: Vec<(String, String)>,
}

pub fn unique_dir(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let d = std::env::temp_dir().join(format!(
        "cnd-it-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

impl Daemon {
    /// A fake-kernel daemon with its own state dir and socket.
    pub fn start(tag: &str, config: Option<&str>) -> Daemon {
        Daemon::start_with(tag, config, Launch::default())
    }

    pub fn start_with(tag: &str, config: Option<&str>, launch: Launch) -> Daemon {
        let dir = unique_dir(tag);
        let socket = dir.join("netd.sock");
        let state = dir.join("state");
        std::fs::create_dir_all(dir.join("state/fake-netns")).unwrap();
        let mut d = Daemon {
            dir,
            socket,
            state,
            child: None,
            launch,
        };
        d.spawn(config);
        d
    }

    /// Where the daemon's log goes.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("daemon.log")
    }

    fn log_file(&self) -> Stdio {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null())
    }

    /// The daemon's open file descriptors.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn spawn(&mut self, config: Option<&str>) {
        let mut cmd = match self.launch.fd_limit {
            Some(n) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(bin());
                c
            }
            None => netd(),
        };
        cmd.env_remove("CONDUCTOR_NETD_SOCKET");
        cmd.envs(self.launch.env.iter().map(|(k, v)| (k, v)));
        cmd.arg("serve")
            .arg("--fake-kernel")
            .arg("--socket")
            .arg(&self.socket)
            .arg("--state-dir")
            .arg(&self.state)
            .stdout(Stdio::null())
            .stderr(self.log_file());
        if let Some(text) = config {
            let path = self.dir.join("config.toml");
            std::fs::write(&path, text).unwrap();
            cmd.arg("--config").arg(path);
        } else {
            let path = self.dir.join("empty.toml");
            std::fs::write(&path, "").unwrap();
            cmd.arg("--config").arg(path);
        }
        self.child = Some(cmd.spawn().expect("start the daemon"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.run(&["status"]).status.success() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("daemon did not come up on {}", self.socket.display());
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A fake namespace: a file under the fake netns dir.
    pub fn netns(&self, name: &str) {
        std::fs::write(self.state.join("fake-netns").join(name), b"").unwrap();
    }

    pub fn run(&self, args: &[&str]) -> Output {
        netd()
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run conductor-netd")
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.ok(&a)).unwrap()
    }

    /// Expect the exit code of an error class and an error naming `text`.
    pub fn fails(&self, args: &[&str], code: i32, text: &str) {
        let out = self.run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(text), "{args:?}: {err:?} lacks {text:?}");
    }

    /// One raw HTTP request; (status, body).
    pub fn http(&self, method: &str, path: &str, body: &[u8]) -> (u16, serde_json::Value) {
        let mut s = UnixStream::connect(&self.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        let _ = s.write_all(body);
        let mut resp = Vec::new();
        let _ = s.read_to_end(&mut resp);
        let text = String::from_utf8_lossy(&resp).to_string();
        let status: u16 = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no status in {text:?}"));
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
        (
            status,
            serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
        )
    }

    pub fn networks(&self) -> serde_json::Value {
        self.json(&["network", "ls"])
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
