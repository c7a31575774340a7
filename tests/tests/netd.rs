//! Unprivileged integration tests of the conductor-netd binary: command-line
//! usage and exit codes, API errors against a daemon run with its in-memory
//! kernel (`serve --fake-kernel`, which needs no privileges), state files,
//! and the socket's permission checks (the uid-switching parts run only as
//! root).

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use conductor_tests::daemon::*;

#[test]
fn usage_errors_exit_2_help_and_version_exit_0() {
    for args in [
        vec!["--help"],
        vec!["--version"],
        vec!["network", "--help"],
        vec!["attach", "--help"],
    ] {
        let out = netd().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}");
    }
    for args in [
        vec![],
        vec!["frobnicate"],
        vec!["network"],
        vec!["network", "create"],
        vec!["attach", "net"],
        vec!["attach", "net", "--netns", "a", "--pid", "1"],
        vec!["detach", "net", "--netns"],
        vec!["network", "create", "n", "--mtu", "lots"],
        vec!["attach", "net", "--pid", "notanumber"],
        vec!["serve", "--log-format", "xml"],
    ] {
        let out = netd().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty());
    }
}

#[test]
fn clients_without_a_daemon_say_where_they_looked() {
    let dir = unique_dir("nodaemon");
    let sock = dir.join("none.sock");
    let out = netd()
        .arg("--socket")
        .arg(&sock)
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(UNREACHABLE));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("none.sock") && err.contains("cannot reach"),
        "{err}"
    );
    // The environment variable works as well as --socket.
    let out = netd()
        .env("CONDUCTOR_NETD_SOCKET", &sock)
        .args(["network", "ls"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("none.sock"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn serve_names_missing_capabilities() {
    let dir = unique_dir("caps");
    let mut cmd = if is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(bin());
        c
    } else {
        netd()
    };
    let out = cmd
        .arg("serve")
        .arg("--socket")
        .arg(dir.join("s"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(PERMISSION), "{err}");
    assert!(
        err.contains("CAP_NET_ADMIN") && err.contains("CAP_SYS_ADMIN"),
        "{err}"
    );
    assert!(!dir.join("s").exists());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_configuration_is_named() {
    let dir = unique_dir("config");
    let cfg = dir.join("c.toml");
    std::fs::write(&cfg, "pool = \"10.89.0.1/16\"\n").unwrap();
    let out = netd()
        .arg("serve")
        .arg("--fake-kernel")
        .arg("--config")
        .arg(&cfg)
        .arg("--socket")
        .arg(dir.join("s"))
        .arg("--state-dir")
        .arg(dir.join("st"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(INVALID), "{err}");
    assert!(
        err.contains("c.toml") && err.contains("10.89.0.1/16"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn network_lifecycle_and_state_files() {
    let mut d = Daemon::start("lifecycle", None);
    let meta = std::fs::metadata(&d.socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);

    let out = d.ok(&["network", "create", "web"]);
    assert!(out.contains("10.89.0.0/24"), "{out}");
    let created = d.json(&[
        "network",
        "create",
        "db",
        "--subnet",
        "172.30.5.0/24",
        "--mtu",
        "1400",
    ]);
    assert_eq!(created["gateway"], "172.30.5.1");
    assert_eq!(created["bridge"], "cn-db");
    assert_eq!(d.networks().as_array().unwrap().len(), 2);
    let table = d.ok(&["network", "ls"]);
    assert!(
        table.starts_with("NAME") && table.contains("cn-web"),
        "{table}"
    );

    // State files, written atomically.
    let file = d.state.join("networks/db.json");
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(saved["subnet"], "172.30.5.0/24");
    assert_eq!(saved["mtu"], 1400);
    let leftovers: Vec<_> = std::fs::read_dir(d.state.join("networks"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty());

    // Attach by netns name and by path; idempotent.
    d.netns("c1");
    let path_ns = d.dir.join("ns-file");
    std::fs::write(&path_ns, b"").unwrap();
    let a = d.json(&["attach", "web", "--netns", "c1"]);
    assert_eq!(a["created"], true);
    assert_eq!(a["endpoint"]["result"]["cniVersion"], "1.0.0");
    assert_eq!(a["endpoint"]["result"]["ips"][0]["address"], "10.89.0.2/24");
    let again = d.json(&["attach", "web", "--netns", "c1"]);
    assert_eq!(again["created"], false);
    assert_eq!(again["endpoint"], a["endpoint"]);
    let b = d.json(&[
        "attach",
        "web",
        "--netns-path",
        path_ns.to_str().unwrap(),
        "--ip",
        "10.89.0.50",
        "--ifname",
        "net1",
    ]);
    assert_eq!(b["endpoint"]["ipv4"], "10.89.0.50/24");
    assert_eq!(b["endpoint"]["ifname"], "net1");
    let id = a["endpoint"]["id"].as_str().unwrap().to_string();
    assert!(journaled_endpoints(&d.state).contains(&id));
    let eps = d.json(&["endpoints", "web"]);
    assert_eq!(eps.as_array().unwrap().len(), 2);
    let status = d.ok(&["status"]);
    assert!(
        status.contains("bridge cn-web") && status.contains("10.89.0.50/24"),
        "{status}"
    );
    let inspect = d.json(&["network", "inspect", "web"]);
    assert_eq!(inspect["network"]["endpoints"], 2);

    // Remove is refused while endpoints exist; --force detaches them.
    d.fails(&["network", "rm", "web"], CONFLICT, "2 endpoint(s)");
    let det = d.json(&["detach", "web", "--netns", "c1"]);
    assert_eq!(det["detached"], true);
    assert!(!journaled_endpoints(&d.state).contains(&id));
    let det = d.json(&["detach", "web", "--netns", "c1"]);
    assert_eq!(det["detached"], false);
    let rm = d.json(&["network", "rm", "web", "--force"]);
    assert_eq!(rm["detached"], 1);
    assert!(!d.state.join("networks/web.json").exists());

    // A crash (kill -9) and a restart replay the state.
    d.kill9();
    d.spawn(None);
    let nets = d.networks();
    assert_eq!(nets.as_array().unwrap().len(), 1);
    assert_eq!(nets[0]["name"], "db");
}

#[test]
fn bad_inputs_give_clear_errors_and_change_nothing() {
    let d = Daemon::start("bad", Some("pool = \"10.77.0.0/23\"\n"));
    d.ok(&["network", "create", "a"]);
    d.ok(&["network", "create", "fixed", "--subnet", "192.168.50.0/24"]);
    d.netns("c1");
    d.netns("c2");
    d.ok(&["attach", "fixed", "--netns", "c1", "--ip", "192.168.50.10"]);
    let before_nets = d.networks();
    let before_eps = d.json(&["endpoints"]);

    d.fails(
        &["network", "create", "b", "--subnet", "192.168.50.128/25"],
        CONFLICT,
        "overlaps network \"fixed\"",
    );
    d.fails(
        &["network", "create", "b", "--subnet", "10.99.0.7/24"],
        INVALID,
        "10.99.0.7/24",
    );
    d.fails(
        &[
            "network",
            "create",
            "b",
            "--subnet",
            "10.99.0.0/24",
            "--gateway",
            "10.98.0.1",
        ],
        INVALID,
        "10.98.0.1",
    );
    d.fails(
        &["network", "create", &"n".repeat(65)],
        INVALID,
        "longer than 64",
    );
    d.fails(&["network", "create", "bad/name"], INVALID, "bad/name");
    d.fails(
        &["network", "create", "--", "-x"],
        INVALID,
        "must start with",
    );
    d.fails(&["network", "create", "a"], CONFLICT, "already exists");
    d.ok(&["network", "create", "b"]);
    d.fails(&["network", "create", "c"], CONFLICT, "exhausted");
    d.ok(&["network", "rm", "b"]);
    d.fails(
        &["attach", "nope", "--netns", "c2"],
        NOT_FOUND,
        "network \"nope\" not found",
    );
    d.fails(
        &["attach", "fixed", "--pid", "2147483647"],
        NOT_FOUND,
        "pid \"2147483647\" not found",
    );
    d.fails(
        &["attach", "fixed", "--netns", "ghost"],
        NOT_FOUND,
        "netns \"ghost\" not found",
    );
    d.fails(
        &["attach", "fixed", "--netns", "c2", "--ip", "192.168.50.10"],
        CONFLICT,
        "192.168.50.10 is already in use",
    );
    d.fails(
        &["attach", "fixed", "--netns", "c2", "--ip", "10.1.1.1"],
        INVALID,
        "outside the subnet",
    );
    d.fails(
        &["attach", "fixed", "--netns", "c2", "--ip", "banana"],
        INVALID,
        "banana",
    );
    d.fails(
        &[
            "attach",
            "fixed",
            "--netns",
            "c2",
            "--ifname",
            "much-too-long-name",
        ],
        INVALID,
        "much-too-long-name",
    );
    d.fails(&["network", "inspect", "nope"], NOT_FOUND, "not found");

    // Raw API: malformed JSON, unknown fields, wrong types, oversized bodies.
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "/v1/networks",
            b"{\"name\": ".to_vec(),
            400,
            "malformed_body",
        ),
        (
            "/v1/networks",
            b"{\"name\":\"z\",\"colour\":1}".to_vec(),
            400,
            "malformed_body",
        ),
        (
            "/v1/networks",
            b"{\"name\": 7}".to_vec(),
            400,
            "malformed_body",
        ),
        (
            "/v1/networks/fixed/endpoints",
            b"{\"pid\": \"1\"}".to_vec(),
            400,
            "malformed_body",
        ),
        (
            "/v1/networks",
            format!("{{\"name\":\"{}\"}}", "z".repeat(70 * 1024)).into_bytes(),
            413,
            "payload_too_large",
        ),
    ];
    for (path, body, status, code) in cases {
        let (s, v) = d.http("POST", path, &body);
        assert_eq!(s, status, "{path}: {v}");
        assert_eq!(v["error"]["code"], code, "{v}");
        assert!(v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    let (s, v) = d.http("GET", "/v1/nothing", b"");
    assert_eq!((s, v["error"]["code"].as_str()), (404, Some("no_route")));
    let (s, _) = d.http("PATCH", "/v1/networks", b"");
    assert_eq!(s, 405);

    assert_eq!(d.networks(), before_nets);
    assert_eq!(d.json(&["endpoints"]), before_eps);
}

#[test]
fn socket_peers_are_checked() {
    if !is_root() {
        eprintln!("skipped: switching uid needs root");
        return;
    }
    let d = Daemon::start("peers", Some("socket_mode = \"0666\"\n"));
    let as_nobody = |d: &Daemon, groups: &str| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534"])
            .arg(groups)
            .arg(bin())
            .arg("--socket")
            .arg(&d.socket)
            .args(["network", "ls"])
            .output()
            .unwrap()
    };
    let out = as_nobody(&d, "--clear-groups");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(PERMISSION), "{err}");
    assert!(err.contains("uid 65534 is not allowed"), "{err}");
    drop(d);

    // Members of the configured group are let in.
    let d = Daemon::start(
        "peers-group",
        Some("socket_mode = \"0660\"\nsocket_group = \"4242\"\n"),
    );
    let meta = std::fs::metadata(&d.socket).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::gid(&meta), 4242);
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--groups=4242"])
        .arg(bin())
        .arg("--socket")
        .arg(&d.socket)
        .args(["network", "ls", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without the group the file mode already keeps it out.
    let out = as_nobody(&d, "--clear-groups");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(UNREACHABLE), "{err}");
    assert!(err.contains("permission denied"), "{err}");
}

#[test]
fn a_second_daemon_on_the_same_socket_or_state_is_refused() {
    let d = Daemon::start("twice", None);
    let out = netd()
        .args(["serve", "--fake-kernel", "--socket"])
        .arg(&d.socket)
        .arg("--state-dir")
        .arg(d.dir.join("other-state"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(CONFLICT));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already listening"));
    let out = netd()
        .args(["serve", "--fake-kernel", "--socket"])
        .arg(d.dir.join("other.sock"))
        .arg("--state-dir")
        .arg(&d.state)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(CONFLICT));
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use by another"));
}

/// The endpoint ids the daemon's state journal holds.
fn journaled_endpoints(state: &std::path::Path) -> Vec<String> {
    conductor_netd::state::journaled_endpoint_ids(state).expect("read the journal")
}
