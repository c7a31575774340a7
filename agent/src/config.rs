//! The daemon's configuration: a TOML file whose every field has a default,
//! so an empty file (or none at all) gives a working daemon.
//!
//! ```toml
//! state_dir = "/var/lib/conductor-netd"
//! socket = "/run/conductor-netd/netd.sock"
//! socket_group = "conductor"      # gid or group name allowed on the socket
//! socket_readonly_group = "view"  # members may use GET routes only
//! allow_host_namespace = false    # refuse attaching the daemon's own namespace
//! pool = "10.89.0.0/16"           # automatic subnets come from here
//! pool_prefix = 24                # ... in pieces of this size
//! mtu = 1500
//! docker_plugin = "/run/docker/plugins/conductor.sock"  # `docker network create -d conductor`
//! ```

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub const DEFAULT_STATE_DIR: &str = "/var/lib/conductor-netd";
pub const DEFAULT_SOCKET: &str = "/run/conductor-netd/netd.sock";
pub const DEFAULT_CONFIG: &str = "/etc/conductor-netd/config.toml";
/// Environment variable that points clients (and `serve`) at a socket.
pub const SOCKET_ENV: &str = "CONDUCTOR_NETD_SOCKET";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where networks and endpoints are persisted.
    pub state_dir: PathBuf,
    /// The API's unix socket.
    pub socket: PathBuf,
    /// Group (name or numeric gid) whose members may use the socket besides
    /// root. The socket file gets this group.
    pub socket_group: Option<String>,
    /// Permission bits of the socket file (octal string, e.g. "0660").
    pub socket_mode: String,
    /// Pool of automatic IPv4 subnets.
    pub pool: Ipv4Net,
    /// Prefix length of automatic subnets.
    pub pool_prefix: u8,
    /// Default MTU of bridges and endpoints.
    pub mtu: u32,
    /// fsync state files and their directory (turn off only on tmpfs).
    pub fsync: bool,
    /// Also fdatasync endpoint journal lines. Off by default: an endpoint
    /// cannot outlive a machine crash, and an appended line already survives
    /// a daemon crash (see `state`).
    pub fsync_endpoints: bool,
    /// Probe the environment (like `doctor`) at start-up.
    pub startup_probe: bool,
    /// Host-side netlink connections used in parallel (veth deletion waits
    /// for an RCU grace period; parallel connections overlap those waits).
    pub netlink_connections: usize,
    /// How traffic leaves the sandbox: "auto" (chosen from what works
    /// here), "nat", "proxy" or "none".
    pub egress: String,
    /// The transparent proxy's ports (`proxy` egress redirects TCP there).
    pub egress_proxy_port: u16,
    pub egress_proxy_port6: u16,
    /// Resolvers names are forwarded to (default: /etc/resolv.conf's).
    pub dns_upstreams: Vec<std::net::SocketAddr>,
    /// Group (name or gid) whose members may use the GET routes only. The
    /// socket file must let them connect (see README "Peers").
    pub socket_readonly_group: Option<String>,
    /// Allow attaching the daemon's own network namespace (an interface
    /// and a default route in the host's namespace). Off: refused.
    pub allow_host_namespace: bool,
    /// A request's headers must be complete within this (ms).
    pub api_header_timeout_ms: u64,
    /// A request's body must be complete within this once its headers are (ms).
    pub api_body_timeout_ms: u64,
    /// A connection with no traffic and no request in flight is closed (ms).
    pub api_idle_timeout_ms: u64,
    /// Connections at once (root may exceed it by a reserve); lowered to
    /// what the fd limit allows.
    pub api_max_connections: usize,
    /// Connections at once of one non-root uid.
    pub api_max_connections_per_uid: usize,
    /// The `*.localhost` reverse proxy's listener ("127.0.0.1:8000"); off
    /// when unset.
    pub localhost_proxy: Option<std::net::SocketAddr>,
    /// Serve Docker's network plugin protocols on this socket (Docker
    /// looks for /run/docker/plugins/conductor.sock); off when unset.
    pub docker_plugin: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            socket: PathBuf::from(DEFAULT_SOCKET),
            socket_group: None,
            socket_mode: "0660".to_string(),
            pool: Ipv4Net::new(Ipv4Addr::new(10, 89, 0, 0), 16).expect("valid constant"),
            pool_prefix: 24,
            mtu: 1500,
            fsync: true,
            fsync_endpoints: false,
            startup_probe: true,
            netlink_connections: 16,
            egress: "auto".to_string(),
            egress_proxy_port: 15001,
            egress_proxy_port6: 15002,
            dns_upstreams: Vec::new(),
            socket_readonly_group: None,
            allow_host_namespace: false,
            api_header_timeout_ms: 10_000,
            api_body_timeout_ms: 10_000,
            api_idle_timeout_ms: 60_000,
            api_max_connections: 512,
            api_max_connections_per_uid: 64,
            localhost_proxy: None,
            docker_plugin: None,
        }
    }
}

impl Config {
    /// Parse a configuration from TOML text; `path` is for messages.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config> {
        let config: Config = toml::from_str(text).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            reason: e.message().to_string(),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    /// Load `path`; a missing file at the default location means defaults.
    pub fn load(path: Option<&Path>) -> Result<Config> {
        let (path, required) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG), false),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Config::from_toml(&text, &path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                Ok(Config::default())
            }
            Err(e) => Err(Error::Config {
                path,
                reason: e.to_string(),
            }),
        }
    }

    pub fn validate(&self, path: &Path) -> Result<()> {
        let bad = |reason: String| Error::Config {
            path: path.to_path_buf(),
            reason,
        };
        if self.pool.trunc() != self.pool {
            return Err(bad(format!(
                "pool {} is not a network address (did you mean {}?)",
                self.pool,
                self.pool.trunc()
            )));
        }
        if self.pool_prefix < self.pool.prefix_len() || self.pool_prefix > 30 {
            return Err(bad(format!(
                "pool_prefix {} must be between the pool's /{} and /30",
                self.pool_prefix,
                self.pool.prefix_len()
            )));
        }
        if let Err(e) = netns::validate_mtu(self.mtu) {
            return Err(bad(e.to_string()));
        }
        self.socket_mode_bits()
            .map_err(|_| bad(format!("socket_mode {:?} is not octal", self.socket_mode)))?;
        self.egress_backend().map_err(|_| {
            bad(format!(
                "egress {:?} must be auto, nat, proxy or none",
                self.egress
            ))
        })?;
        if self.egress_proxy_port == 0 || self.egress_proxy_port6 == 0 {
            return Err(bad(
                "egress_proxy_port and egress_proxy_port6 must be 1..=65535".into(),
            ));
        }
        if self.netlink_connections == 0 || self.netlink_connections > 256 {
            return Err(bad(format!(
                "netlink_connections {} must be 1..=256",
                self.netlink_connections
            )));
        }
        for (name, ms) in [
            ("api_header_timeout_ms", self.api_header_timeout_ms),
            ("api_body_timeout_ms", self.api_body_timeout_ms),
            ("api_idle_timeout_ms", self.api_idle_timeout_ms),
        ] {
            if !(100..=3_600_000).contains(&ms) {
                return Err(bad(format!("{name} {ms} must be 100..=3600000")));
            }
        }
        if !(1..=65_536).contains(&self.api_max_connections) {
            return Err(bad(format!(
                "api_max_connections {} must be 1..=65536",
                self.api_max_connections
            )));
        }
        if !(1..=self.api_max_connections).contains(&self.api_max_connections_per_uid) {
            return Err(bad(format!(
                "api_max_connections_per_uid {} must be 1..=api_max_connections ({})",
                self.api_max_connections_per_uid, self.api_max_connections
            )));
        }
        Ok(())
    }

    pub fn socket_mode_bits(&self) -> Result<u32> {
        let s = self.socket_mode.trim_start_matches("0o");
        match u32::from_str_radix(s, 8) {
            Ok(bits) if bits <= 0o777 => Ok(bits),
            _ => Err(Error::invalid(
                "socket mode",
                &self.socket_mode,
                "not an octal mode",
            )),
        }
    }

    /// The egress backend asked for; None = chosen from what works.
    pub fn egress_backend(&self) -> Result<Option<crate::egress::BackendKind>> {
        match self.egress.as_str() {
            "auto" => Ok(None),
            other => other
                .parse()
                .map(Some)
                .map_err(|e: crate::egress::EgressError| {
                    Error::invalid("egress", other, e.to_string())
                }),
        }
    }

    /// The pool as a generic network.
    pub fn pool_net(&self) -> IpNet {
        IpNet::V4(self.pool)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::from_toml("", Path::new("x.toml")).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/conductor-netd"));
        assert_eq!(c.socket, PathBuf::from("/run/conductor-netd/netd.sock"));
        assert_eq!(c.pool.to_string(), "10.89.0.0/16");
        assert_eq!(c.mtu, 1500);
        assert_eq!(c.socket_mode_bits().unwrap(), 0o660);
    }

    #[test]
    fn fields_override() {
        let c = Config::from_toml(
            "state_dir = \"/tmp/s\"\npool = \"172.30.0.0/16\"\npool_prefix = 26\nmtu = 9000\nsocket_group = \"wheel\"\n",
            Path::new("x.toml"),
        )
        .unwrap();
        assert_eq!(c.state_dir, PathBuf::from("/tmp/s"));
        assert_eq!(c.pool_prefix, 26);
        assert_eq!(c.mtu, 9000);
        assert_eq!(c.socket_group.as_deref(), Some("wheel"));
    }

    #[test]
    fn unknown_and_bad_fields_are_refused_by_name() {
        let e = Config::from_toml("colour = 1", Path::new("c.toml")).unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
        let e = Config::from_toml("pool = \"10.89.0.1/16\"", Path::new("c.toml")).unwrap_err();
        assert!(e.to_string().contains("10.89.0.1/16"), "{e}");
        let e = Config::from_toml("mtu = 12", Path::new("c.toml")).unwrap_err();
        assert!(e.to_string().contains("12"), "{e}");
        let e = Config::from_toml("pool_prefix = 8", Path::new("c.toml")).unwrap_err();
        assert!(e.to_string().contains("pool_prefix 8"), "{e}");
        let e = Config::from_toml("socket_mode = \"rw\"", Path::new("c.toml")).unwrap_err();
        assert!(e.to_string().contains("rw"), "{e}");
        let e = Config::from_toml("api_idle_timeout_ms = 5", Path::new("c.toml")).unwrap_err();
        assert!(e.to_string().contains("api_idle_timeout_ms 5"), "{e}");
        let e = Config::from_toml(
            "api_max_connections = 4\napi_max_connections_per_uid = 8",
            Path::new("c.toml"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("per_uid 8"), "{e}");
    }

    #[test]
    fn missing_default_file_is_fine_but_missing_named_file_is_not() {
        assert!(Config::load(Some(Path::new("/nonexistent/conductor.toml"))).is_err());
    }
}
