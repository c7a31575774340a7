//! Issue 10 ("harden conductor-netd"), against the binary with its
//! in-memory kernel: the API server's time-outs and caps, refused peers,
//! the read-only group, clients hanging up mid-attach, concurrent
//! detaches, bad inputs (special subnets, prefix bridges, reserved
//! interface names) and `serve --socket` on a file that is not a socket.
//! Kernel-side cases (FIFO targets, re-created namespaces, recovery from a
//! lost journal) are in vm-tests/agent.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use conductor_tests::daemon::*;

/// Short time-outs so that the tests wait seconds, not minutes.
const FAST: &str =
    "api_header_timeout_ms = 1000\napi_body_timeout_ms = 1000\napi_idle_timeout_ms = 1500\n";

/// Send `first`, then `more` pieces `every` apart (until the daemon closes),
/// then read: how long until the connection ended, and what was answered.
fn hold(d: &Daemon, first: &[u8], more: &[u8], every: Duration) -> (Duration, String) {
    let start = Instant::now();
    let mut s = UnixStream::connect(&d.socket).unwrap();
    s.write_all(first).unwrap();
    s.set_read_timeout(Some(every.max(Duration::from_millis(50))))
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while start.elapsed() < Duration::from_secs(15) {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if !more.is_empty() && s.write_all(more).is_err() {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    (
        start.elapsed(),
        String::from_utf8_lossy(&answer).to_string(),
    )
}

#[test]
fn partial_headers_bodies_dribbles_and_silence_are_cut_off() {
    let d = Daemon::start("timeouts", Some(FAST));
    let limit = Duration::from_secs(4);
    let never = Duration::from_secs(30);
    // Silent: nothing at all after connecting.
    let (t, _) = hold(&d, b"", b"", never);
    assert!(t < limit, "silent connection held {t:?}");
    // Partial headers, then nothing; and headers dribbled a byte at a time.
    let (t, _) = hold(&d, b"GET /v1/status HTTP/1.1\r\nHost: x\r\n", b"", never);
    assert!(t < limit, "partial headers held {t:?}");
    let (t, _) = hold(
        &d,
        b"GET /v1/status HTTP/1.1\r\n",
        b"X",
        Duration::from_millis(100),
    );
    assert!(t < limit, "dribbled headers held {t:?}");
    // A partial body: 10 of 100 bytes.
    let head = "POST /v1/networks HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"name\":\"";
    let (t, answer) = hold(&d, head.as_bytes(), b"", never);
    assert!(t < limit, "partial body held {t:?}");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    // A chunked body dribbled a byte every 100 ms.
    let head = "POST /v1/networks HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
    let (t, answer) = hold(
        &d,
        head.as_bytes(),
        b"1\r\n{\r\n",
        Duration::from_millis(100),
    );
    assert!(t < limit, "chunked dribble held {t:?}");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    // A body dribbled into a route that does not read it.
    let head = "GET /v1/status HTTP/1.1\r\nHost: x\r\ncontent-length: 1000\r\n\r\n";
    let (t, _) = hold(&d, head.as_bytes(), b"x", Duration::from_millis(100));
    assert!(t < limit, "body dribbled into GET held {t:?}");
    // Kept alive after an answer, then quiet.
    let (t, answer) = hold(
        &d,
        b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n",
        b"",
        never,
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(t < limit, "idle keep-alive connection held {t:?}");
    // And the daemon still answers.
    d.ok(&["status"]);
}

/// Run a client command with a deadline.
fn within(cmd: &mut Command, limit: Duration) -> Option<std::process::Output> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while start.elapsed() < limit {
        if child.try_wait().unwrap().is_some() {
            return Some(child.wait_with_output().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

fn flood(d: &Daemon, count: usize, hold_secs: u32, uid: Option<u32>) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_api-flood"));
    cmd.arg(&d.socket)
        .arg(count.to_string())
        .arg(hold_secs.to_string())
        .stdout(Stdio::piped());
    if let Some(uid) = uid {
        cmd.uid(uid).gid(uid);
    }
    cmd.spawn().unwrap()
}

/// Wait for api-flood's "opened" line.
fn opened(flood: &mut Child) -> String {
    let mut out = flood.stdout.take().unwrap();
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while out.read(&mut b).unwrap_or(0) == 1 && b[0] != b'\n' {
        line.push(b[0]);
    }
    flood.stdout = Some(out);
    String::from_utf8_lossy(&line).to_string()
}

#[test]
fn two_thousand_idle_connections_do_not_lock_out_status_or_attach() {
    let d = Daemon::start_with(
        "idle-flood",
        None,
        Launch {
            fd_limit: Some(1024),
            ..Launch::default()
        },
    );
    d.ok(&["network", "create", "n"]);
    d.netns("c1");
    let mut f = flood(&d, 2000, 10, None);
    let line = opened(&mut f);
    assert!(line.starts_with("opened"), "{line}");
    let status = within(
        netd().arg("--socket").arg(&d.socket).arg("status"),
        Duration::from_secs(5),
    )
    .expect("status did not answer within 5 s");
    assert!(status.status.success(), "{status:?}");
    let attach = within(
        netd()
            .arg("--socket")
            .arg(&d.socket)
            .args(["attach", "n", "--netns", "c1"]),
        Duration::from_secs(5),
    )
    .expect("attach did not answer within 5 s");
    assert!(attach.status.success(), "{attach:?}");
    let fds = d.open_fds();
    assert!(fds < 1024, "the daemon holds {fds} fds");
    let _ = f.kill();
    let _ = f.wait();
    let log = std::fs::read_to_string(d.log_path()).unwrap_or_default();
    let warnings = log.matches("accept failed").count();
    assert!(warnings <= 3, "{warnings} accept warnings:\n{log}");
}

#[test]
fn a_refused_uid_cannot_exhaust_anything() {
    if !is_root() {
        panic!("this test switches uid: run it as root (CI does)");
    }
    let d = Daemon::start("refused-flood", Some("socket_mode = \"0666\"\n"));
    let mut f = flood(&d, 2000, 6, Some(65534));
    let line = opened(&mut f);
    assert!(line.starts_with("opened"), "{line}");
    let status = within(
        netd().arg("--socket").arg(&d.socket).arg("status"),
        Duration::from_secs(5),
    )
    .expect("status did not answer within 5 s");
    assert!(status.status.success(), "{status:?}");
    let fds = d.open_fds();
    assert!(fds < 200, "a refused uid made the daemon hold {fds} fds");
    let out = f.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // Every refused connection was answered (403) or cut off.
    assert!(text.contains(" open 0"), "{line} / {text}");
}

#[test]
fn members_of_the_read_only_group_may_only_read() {
    if !is_root() {
        panic!("this test switches uid: run it as root (CI does)");
    }
    let d = Daemon::start(
        "readonly",
        Some("socket_mode = \"0666\"\nsocket_readonly_group = \"4343\"\n"),
    );
    d.ok(&["network", "create", "n"]);
    let as_member = |args: &[&str]| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--groups=4343"])
            .arg(bin())
            .arg("--socket")
            .arg(&d.socket)
            .args(args)
            .output()
            .unwrap()
    };
    let ls = as_member(&["network", "ls", "--json"]);
    assert!(ls.status.success(), "{ls:?}");
    assert!(String::from_utf8_lossy(&ls.stdout).contains("\"n\""));
    let create = as_member(&["network", "create", "m"]);
    let err = String::from_utf8_lossy(&create.stderr);
    assert_eq!(create.status.code(), Some(PERMISSION), "{err}");
    assert!(err.contains("read-only"), "{err}");
    let rm = as_member(&["network", "rm", "n"]);
    assert_eq!(rm.status.code(), Some(PERMISSION));
    assert_eq!(d.networks().as_array().unwrap().len(), 1);
}

#[test]
fn a_client_hanging_up_mid_attach_leaves_a_whole_endpoint() {
    let d = Daemon::start_with(
        "hangup",
        None,
        Launch {
            env: vec![("CONDUCTOR_NETD_FAULT".into(), "slow_attach".into())],
            ..Launch::default()
        },
    );
    d.ok(&["network", "create", "n"]);
    for i in 0..4 {
        let ns = format!("c{i}");
        d.netns(&ns);
        let mut client = netd()
            .arg("--socket")
            .arg(&d.socket)
            .args(["attach", "n", "--netns", &ns])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The attach waits 500 ms after the kernel step (the fault): the
        // client dies half-way.
        std::thread::sleep(Duration::from_millis(200));
        client.kill().unwrap();
        client.wait().unwrap();
    }
    std::thread::sleep(Duration::from_millis(800));
    let eps = d.json(&["endpoints"]);
    let eps = eps.as_array().unwrap();
    assert_eq!(eps.len(), 4, "{eps:?}");
    for ep in eps {
        assert_eq!(ep["state"], "attached", "{ep}");
    }
    // Complete: attaching again creates nothing.
    let again = d.json(&["attach", "n", "--netns", "c0"]);
    assert_eq!(again["created"], false);
}

#[test]
fn concurrent_detaches_of_one_endpoint_answer_detached_false() {
    let d = Daemon::start_with(
        "detaches",
        None,
        Launch {
            env: vec![("CONDUCTOR_NETD_FAULT".into(), "slow_detach".into())],
            ..Launch::default()
        },
    );
    d.ok(&["network", "create", "n"]);
    d.netns("c1");
    d.ok(&["attach", "n", "--netns", "c1"]);
    let clients: Vec<Child> = (0..10)
        .map(|_| {
            netd()
                .arg("--socket")
                .arg(&d.socket)
                .args(["detach", "n", "--netns", "c1", "--json"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut detached = Vec::new();
    for c in clients {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        detached.push(v["detached"].as_bool().unwrap());
    }
    assert_eq!(detached.iter().filter(|d| **d).count(), 1, "{detached:?}");
}

#[test]
fn serve_never_replaces_a_file_that_is_not_a_socket() {
    let dir = unique_dir("not-a-socket");
    let file = dir.join("netd.sock");
    std::fs::write(&file, b"keep me").unwrap();
    let link = dir.join("link.sock");
    std::os::unix::fs::symlink(&file, &link).unwrap();
    for path in [&file, &link] {
        let out = netd()
            .args(["serve", "--fake-kernel", "--socket"])
            .arg(path)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(INVALID), "{err}");
        assert!(
            err.contains(&path.display().to_string()) && err.contains("not a socket"),
            "{err}"
        );
        assert!(std::fs::symlink_metadata(path).is_ok());
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn special_subnets_are_refused_naming_the_range() {
    let d = Daemon::start("special-subnets", None);
    let v4 = [
        ("0.0.0.0/8", "this network"),
        ("127.0.0.0/24", "loopback"),
        ("169.254.169.0/24", "link-local"),
        ("224.0.0.0/24", "multicast"),
        ("239.255.0.0/16", "multicast"),
        ("240.0.0.0/24", "reserved"),
        ("255.255.255.0/24", "reserved"),
    ];
    for (subnet, what) in v4 {
        let body = format!("{{\"name\":\"x\",\"subnet\":\"{subnet}\"}}");
        let (status, v) = d.http("POST", "/v1/networks", body.as_bytes());
        assert_eq!(status, 400, "{subnet}: {v}");
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains(subnet) && msg.contains(what),
            "{subnet}: {msg}"
        );
    }
    let v6 = [
        ("::/64", "loopback"),
        ("::ffff:0:0/96", "IPv4-mapped"),
        ("fe80::/64", "link-local"),
        ("ff02::/64", "multicast"),
    ];
    for (subnet, what) in v6 {
        let body =
            format!("{{\"name\":\"x\",\"subnet\":\"10.70.0.0/24\",\"ipv6_subnet\":\"{subnet}\"}}");
        let (status, v) = d.http("POST", "/v1/networks", body.as_bytes());
        assert_eq!(status, 400, "{subnet}: {v}");
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains(subnet) && msg.contains(what),
            "{subnet}: {msg}"
        );
    }
    assert_eq!(d.networks().as_array().unwrap().len(), 0);
}

#[test]
fn prefix_bridges_and_reserved_interface_names_are_refused() {
    let d = Daemon::start("names", None);
    let instance: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.state.join("instance.json")).unwrap()).unwrap();
    let ours = format!("cn{}5", instance["tag"].as_str().unwrap());
    d.fails(
        &["network", "create", "n", "--bridge", &ours],
        INVALID,
        &ours,
    );
    for name in ["all", "default"] {
        d.fails(&["network", "create", "n", "--bridge", name], INVALID, name);
    }
    d.ok(&["network", "create", "n"]);
    d.netns("c1");
    for name in ["all", "default"] {
        d.fails(
            &["attach", "n", "--netns", "c1", "--ifname", name],
            INVALID,
            name,
        );
    }
    assert_eq!(d.json(&["endpoints"]).as_array().unwrap().len(), 0);
}
