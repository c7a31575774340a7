//! What `docker up` will do, decided from what was found on this machine
//! (the doctor report and a few direct looks), with the reason for every
//! choice. Pure: the findings come in, the plan goes out, nothing runs.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::cgroups::CgroupState;
use crate::error::{Error, Result};

/// What `docker up` was asked for.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub dockerd: PathBuf,
    pub data_root: Option<PathBuf>,
    pub docker_socket: PathBuf,
    pub extra_args: Vec<String>,
}

/// What was found, before deciding.
#[derive(Debug, Clone)]
pub struct Findings {
    /// The platform (`kernel`, `gvisor`).
    pub platform: String,
    /// Netlink multicast subscriptions work (Docker >= 28 needs them).
    pub subscription_works: bool,
    /// MASQUERADE works: Docker's own NAT rules can do their job.
    pub masquerade_works: bool,
    pub cgroups: CgroupState,
    /// An overlay mount worked on the data root's filesystem; the reason
    /// when it did not.
    pub overlay: std::result::Result<(), String>,
    /// The preload library, if installed.
    pub preload: Option<PathBuf>,
    /// `dockerd --version`, first line.
    pub dockerd_version: String,
    /// The machine's resolvers a container can reach (not loopback), from
    /// /etc/resolv.conf.
    pub resolvers: Vec<std::net::IpAddr>,
}

/// One decision and its reason, as printed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Choice {
    pub what: &'static str,
    pub chosen: String,
    pub why: String,
}

/// Everything `docker up` will do.
#[derive(Debug, Clone, Serialize)]
pub struct UpPlan {
    /// The engine's name: `default` for /var/run/docker.sock, else derived
    /// from the socket path. Names its run directory and netd's record.
    pub name: String,
    pub dockerd: PathBuf,
    pub docker_socket: PathBuf,
    pub data_root: PathBuf,
    /// dockerd's exec root, pid file and log live here, and `docker up`'s
    /// record of what it did.
    pub run_dir: PathBuf,
    /// Environment set for dockerd (LD_PRELOAD, PATH).
    pub env: Vec<(String, String)>,
    pub args: Vec<String>,
    /// cgroup v1 controllers to mount first (empty: none).
    pub mount_cgroups: Vec<String>,
    /// Docker manages its own iptables rules (a real kernel); `docker down`
    /// removes what it leaves.
    pub docker_iptables: bool,
    /// conductor-netd serves names for Docker's networks.
    pub netd_dns: bool,
    /// conductor-netd provides egress for Docker's networks.
    pub netd_egress: bool,
    pub choices: Vec<Choice>,
}

/// Where engines other than the default keep their run state.
pub const RUN_BASE: &str = "/run/conductor-net/docker";
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// `default` for the default socket, else `s` + 8 hex digits of a hash of
/// the socket path (stable: `docker down` finds the same name).
pub fn engine_name(socket: &Path) -> String {
    if socket == Path::new(DEFAULT_SOCKET) || socket == Path::new("/run/docker.sock") {
        return "default".into();
    }
    let mut h: u64 = 0xcbf29ce484222325;
    for b in socket.as_os_str().as_encoded_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("s{:08x}", h as u32)
}

fn has_flag(args: &[String], names: &[&str]) -> bool {
    args.iter().any(|a| {
        names
            .iter()
            .any(|n| a == n || a.starts_with(&format!("{n}=")))
    })
}

pub fn plan(opts: &UpOptions, found: &Findings) -> Result<UpPlan> {
    let name = engine_name(&opts.docker_socket);
    let run_dir = Path::new(RUN_BASE).join(&name);
    let data_root = opts.data_root.clone().unwrap_or_else(|| {
        if name == "default" {
            PathBuf::from("/var/lib/docker")
        } else {
            Path::new("/var/lib/conductor-net/docker").join(&name)
        }
    });
    let gvisor = found.platform == "gvisor";
    let mut choices = vec![Choice {
        what: "dockerd",
        chosen: opts.dockerd.display().to_string(),
        why: found.dockerd_version.clone(),
    }];
    let mut env = Vec::new();
    let mut args = vec![
        "--data-root".to_string(),
        data_root.display().to_string(),
        "--exec-root".to_string(),
        run_dir.join("exec").display().to_string(),
        "--pidfile".to_string(),
        run_dir.join("dockerd.pid").display().to_string(),
        "-H".to_string(),
        format!("unix://{}", opts.docker_socket.display()),
    ];

    let mount_cgroups = match &found.cgroups {
        CgroupState::Unified => {
            choices.push(Choice {
                what: "cgroups",
                chosen: "as they are".into(),
                why: "the unified (v2) hierarchy is mounted".into(),
            });
            Vec::new()
        }
        CgroupState::V1Complete => {
            choices.push(Choice {
                what: "cgroups",
                chosen: "as they are".into(),
                why: "every v1 controller dockerd needs is mounted".into(),
            });
            Vec::new()
        }
        CgroupState::Missing(missing) => {
            choices.push(Choice {
                what: "cgroups",
                chosen: format!("mount v1 {} on /sys/fs/cgroup", missing.join(",")),
                why: "missing here; without them dockerd cannot start a container".into(),
            });
            missing.clone()
        }
    };

    if has_flag(&opts.extra_args, &["--storage-driver", "-s"]) {
        choices.push(Choice {
            what: "storage driver",
            chosen: "as given after --".into(),
            why: "asked for explicitly".into(),
        });
    } else {
        let (driver, why) = match &found.overlay {
            Ok(()) => (
                "overlay2",
                format!("an overlay mount works on {}", data_root.display()),
            ),
            Err(reason) => (
                "vfs",
                format!(
                    "an overlay mount fails on {} ({reason})",
                    data_root.display()
                ),
            ),
        };
        args.extend(["--storage-driver".to_string(), driver.to_string()]);
        choices.push(Choice {
            what: "storage driver",
            chosen: driver.into(),
            why,
        });
    }

    if found.subscription_works {
        choices.push(Choice {
            what: "preload",
            chosen: "none".into(),
            why: "netlink subscriptions work here".into(),
        });
    } else {
        let Some(lib) = &found.preload else {
            return Err(Error::NotInstalled {
                what: "libconductor_preload.so",
                looked_in: crate::preload_setup::candidates()
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                hint: "this sandbox refuses netlink subscriptions and dockerd needs the preload: \
                       install it with scripts/demo.sh or set CONDUCTOR_PRELOAD_PATH",
            });
        };
        env.push(("LD_PRELOAD".to_string(), lib.display().to_string()));
        choices.push(Choice {
            what: "preload",
            chosen: format!("LD_PRELOAD={}", lib.display()),
            why: "this sandbox refuses netlink subscriptions (Docker >= 28 needs them on every \
                  container start) and packet-socket sends"
                .into(),
        });
    }

    // dockerd finds docker-proxy (and its other helpers) on its PATH: its
    // own folder first, so a dockerd from elsewhere uses its own.
    if let Some(dir) = opts.dockerd.parent().filter(|d| !d.as_os_str().is_empty()) {
        let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into());
        env.push(("PATH".to_string(), format!("{}:{path}", dir.display())));
    }

    let docker_nat = found.masquerade_works && !gvisor;
    let explicit_iptables = has_flag(&opts.extra_args, &["--iptables", "--ip6tables"]);
    let (netd_dns, netd_egress) = if docker_nat {
        choices.push(Choice {
            what: "iptables",
            chosen: "Docker's own rules".into(),
            why: "MASQUERADE and conntrack work: Docker's NAT, embedded DNS and -p do their job"
                .into(),
        });
        // Docker >= 26 asks the resolvers it read from the machine's
        // resolv.conf from the machine's namespace (measured with 28.5.2),
        // past the bridge where netd sends a network's DNS to its policy.
        // Named with --dns, the same resolvers are asked from each
        // container's namespace, as Docker 20.10 always does.
        if !has_flag(&opts.extra_args, &["--dns"]) && !found.resolvers.is_empty() {
            for r in &found.resolvers {
                args.extend(["--dns".to_string(), r.to_string()]);
            }
            choices.push(Choice {
                what: "dns",
                chosen: found
                    .resolvers
                    .iter()
                    .map(|r| format!("--dns {r}"))
                    .collect::<Vec<_>>()
                    .join(" "),
                why: "the machine's resolvers, named so that Docker asks them from each \
                      container's namespace, where the egress policy's DNS rules apply"
                    .into(),
            });
        }
        (false, false)
    } else {
        if !explicit_iptables {
            args.extend([
                "--iptables=false".to_string(),
                "--ip6tables=false".to_string(),
            ]);
        }
        choices.push(Choice {
            what: "iptables",
            chosen: "--iptables=false --ip6tables=false".into(),
            why: format!(
                "no MASQUERADE{} here: Docker's NAT rules cannot work",
                if gvisor {
                    ", conntrack or nftables (gVisor)"
                } else {
                    ""
                }
            ),
        });
        choices.push(Choice {
            what: "names",
            chosen: "conductor-netd DNS on 127.0.0.11:53 in each container".into(),
            why: "Docker's embedded DNS reaches its resolver through iptables DNAT, which this \
                  sandbox cannot do"
                .into(),
        });
        choices.push(Choice {
            what: "egress",
            chosen: "conductor-netd (backend chosen from what works: nat or proxy)".into(),
            why: "without MASQUERADE nothing leaves Docker's bridges".into(),
        });
        (true, true)
    };
    args.extend(opts.extra_args.iter().cloned());
    choices.push(Choice {
        what: "socket",
        chosen: format!("unix://{}", opts.docker_socket.display()),
        why: "DOCKER_HOST for every docker command".into(),
    });
    Ok(UpPlan {
        name,
        dockerd: opts.dockerd.clone(),
        docker_socket: opts.docker_socket.clone(),
        data_root,
        run_dir,
        env,
        args,
        mount_cgroups,
        docker_iptables: docker_nat && !explicit_iptables,
        netd_dns,
        netd_egress,
        choices,
    })
}

impl UpPlan {
    /// The command line, as a user would type it.
    pub fn command_line(&self) -> String {
        let mut line: Vec<String> = self
            .env
            .iter()
            .filter(|(k, _)| k != "PATH")
            .map(|(k, v)| format!("{k}={}", crate::preload_setup::shell_quote(v)))
            .collect();
        line.push(crate::preload_setup::shell_quote(
            &self.dockerd.display().to_string(),
        ));
        line.extend(
            self.args
                .iter()
                .map(|a| crate::preload_setup::shell_quote(a)),
        );
        line.join(" ")
    }

    /// The plan as printed.
    pub fn text(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .choices
            .iter()
            .map(|c| vec![c.what.to_string(), c.chosen.clone(), c.why.clone()])
            .collect();
        format!(
            "{}\ncommand: {}\n",
            crate::render::table(&["CHOICE", "CHOSEN", "WHY"], &rows),
            self.command_line()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> UpOptions {
        UpOptions {
            dockerd: "/opt/d/usr/sbin/dockerd".into(),
            data_root: Some("/tmp/data".into()),
            docker_socket: "/tmp/d.sock".into(),
            extra_args: vec![],
        }
    }

    fn gvisor() -> Findings {
        Findings {
            platform: "gvisor".into(),
            subscription_works: false,
            masquerade_works: false,
            cgroups: CgroupState::Missing(vec!["memory".into(), "pids".into()]),
            overlay: Err("EPERM".into()),
            preload: Some("/usr/local/lib/libconductor_preload.so".into()),
            dockerd_version: "Docker version 28.5.2".into(),
            resolvers: vec!["203.0.113.10".parse().unwrap()],
        }
    }

    #[test]
    fn inside_gvisor_everything_the_sandbox_lacks_is_filled_in() {
        let p = plan(&opts(), &gvisor()).unwrap();
        assert_eq!(p.mount_cgroups, ["memory", "pids"]);
        assert!(p.args.windows(2).any(|w| w == ["--storage-driver", "vfs"]));
        assert!(p.args.contains(&"--iptables=false".to_string()));
        assert!(p.args.contains(&"--ip6tables=false".to_string()));
        assert!(p.env.contains(&(
            "LD_PRELOAD".into(),
            "/usr/local/lib/libconductor_preload.so".into()
        )));
        assert!(p.netd_dns && p.netd_egress);
        assert!(p
            .env
            .iter()
            .any(|(k, v)| k == "PATH" && v.starts_with("/opt/d/usr/sbin:")));
        let text = p.text();
        assert!(text.contains("EPERM"), "{text}");
        assert!(p
            .command_line()
            .starts_with("LD_PRELOAD=/usr/local/lib/libconductor_preload.so /opt/d/usr/sbin/dockerd --data-root /tmp/data"));
    }

    #[test]
    fn on_a_real_kernel_docker_keeps_its_own_rules() {
        let found = Findings {
            platform: "kernel".into(),
            subscription_works: true,
            masquerade_works: true,
            cgroups: CgroupState::Unified,
            overlay: Ok(()),
            preload: None,
            dockerd_version: "Docker version 20.10.24".into(),
            resolvers: vec!["203.0.113.10".parse().unwrap()],
        };
        let p = plan(&opts(), &found).unwrap();
        assert!(p.mount_cgroups.is_empty());
        assert!(p
            .args
            .windows(2)
            .any(|w| w == ["--storage-driver", "overlay2"]));
        assert!(!p.args.iter().any(|a| a.starts_with("--iptables")));
        assert!(!p.env.iter().any(|(k, _)| k == "LD_PRELOAD"));
        assert!(!p.netd_dns && !p.netd_egress);
        // The machine's resolvers named, so Docker >= 26 asks them from the
        // containers' namespaces (where the policy's DNS rules apply) ...
        assert!(p.args.windows(2).any(|w| w == ["--dns", "203.0.113.10"]));
        // ... unless the user named resolvers, or there are none to name.
        let mut o = opts();
        o.extra_args = vec!["--dns=192.0.2.53".into()];
        let p = plan(&o, &found).unwrap();
        assert!(!p.args.iter().any(|a| a == "--dns"));
        let mut none = found.clone();
        none.resolvers.clear();
        assert!(!plan(&opts(), &none)
            .unwrap()
            .args
            .iter()
            .any(|a| a == "--dns"));
        // In gVisor netd answers names itself.
        assert!(!plan(&opts(), &gvisor())
            .unwrap()
            .args
            .iter()
            .any(|a| a == "--dns"));
    }

    #[test]
    fn a_missing_preload_is_named_where_it_is_needed() {
        let mut found = gvisor();
        found.preload = None;
        let e = plan(&opts(), &found).unwrap_err();
        assert!(e.to_string().contains("libconductor_preload.so"), "{e}");
        assert_eq!(e.class(), crate::error::ErrorClass::Unsupported);
    }

    #[test]
    fn explicit_dockerd_arguments_win() {
        let mut o = opts();
        o.extra_args = vec!["--storage-driver=overlay2".into(), "--debug".into()];
        let p = plan(&o, &gvisor()).unwrap();
        assert!(!p.args.iter().any(|a| a == "vfs"));
        assert_eq!(p.args.last().unwrap(), "--debug");
    }

    #[test]
    fn engine_names_are_stable() {
        assert_eq!(engine_name(Path::new("/var/run/docker.sock")), "default");
        let a = engine_name(Path::new("/tmp/a.sock"));
        assert_eq!(a, engine_name(Path::new("/tmp/a.sock")));
        assert_ne!(a, engine_name(Path::new("/tmp/b.sock")));
        assert_eq!(a.len(), 9);
    }
}
