use std::process::Command;

use conductor_tests::netd_bin;

fn netd() -> Command {
    Command::new(netd_bin())
}

#[test]
fn help_exits_zero() {
    let out = netd().arg("--help").output().expect("run conductor-netd");
    assert!(out.status.success());
}

#[test]
fn preload_prints_the_exact_dockerd_line() {
    let dir = std::env::temp_dir().join(format!("conductor-cli-preload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let lib = dir.join("libconductor_preload.so");
    std::fs::write(&lib, b"").expect("write");
    let out = netd()
        .env("CONDUCTOR_PRELOAD_PATH", &lib)
        // The library's own switch must not be read as a path.
        .env("CONDUCTOR_PRELOAD", "off")
        .args([
            "preload",
            "--dockerd",
            "/usr/sbin/dockerd",
            "--",
            "-H",
            "unix:///run/d.sock",
        ])
        .output()
        .expect("run conductor-netd");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let lib = lib.display();
    assert!(
        text.contains(&format!(
            "\n  LD_PRELOAD={lib} /usr/sbin/dockerd -H unix:///run/d.sock\n"
        )),
        "{text}"
    );
    assert!(
        text.contains("/etc/systemd/system/docker.service.d/conductor-preload.conf"),
        "{text}"
    );
    assert!(
        text.contains(&format!("  Environment=LD_PRELOAD={lib}\n")),
        "{text}"
    );
}

#[test]
fn preload_names_a_missing_library() {
    let out = netd()
        .env(
            "CONDUCTOR_PRELOAD_PATH",
            "/nonexistent/libconductor_preload.so",
        )
        .args(["--json", "preload"])
        .output()
        .expect("run conductor-netd");
    // Not installed: exit 8 (unsupported / not installed).
    assert_eq!(out.status.code(), Some(8), "{out:?}");
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/libconductor_preload.so"),
        "{err}"
    );
}

#[test]
fn the_preload_switch_is_not_a_library_path() {
    let out = netd()
        .env_remove("CONDUCTOR_PRELOAD_PATH")
        .env("CONDUCTOR_PRELOAD", "off")
        .args(["--json", "preload"])
        .output()
        .expect("run conductor-netd");
    let err = String::from_utf8_lossy(&out.stderr);
    // Whether or not the library is installed here, "off" is never looked
    // for as a file.
    assert!(!err.contains("looked in off"), "{err}");
    assert!(
        out.status.success() || err.contains("/usr/local/lib/libconductor_preload.so"),
        "{err}"
    );
}

/// `docker up` refuses bad input before it starts anything, naming the
/// value (as root: it needs privileges to get that far).
#[test]
fn docker_up_refuses_bad_input_and_starts_nothing() {
    if !nix::unistd::geteuid().is_root() {
        panic!("this test needs root (CI runs as root)");
    }
    let dir = std::env::temp_dir().join(format!("cnd-docker-up-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("d.sock");
    let run = |extra: &[&str], path: Option<&str>| {
        let mut c = netd();
        c.args(["--socket"])
            .arg(dir.join("netd.sock"))
            .args(["docker", "up", "--docker-socket"])
            .arg(&sock)
            .args(extra);
        if let Some(p) = path {
            c.env("PATH", p);
        }
        c.output().expect("run conductor-netd")
    };
    // A --dockerd that does not exist, or is not executable: exit 3.
    let out = run(&["--dockerd", "/nonexistent/dockerd"], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("/nonexistent/dockerd") && err.contains("no such file"),
        "{err}"
    );
    let out = run(&["--dockerd", "/etc/passwd"], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("/etc/passwd") && err.contains("not an executable"),
        "{err}"
    );
    // No dockerd on PATH: not installed (exit 8), naming the package.
    let out = run(&[], Some("/nonexistent"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(8), "{err}");
    assert!(
        err.contains("dockerd") && err.contains("docker.io"),
        "{err}"
    );
    // Something already answers on the Docker socket: conflict (exit 5).
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let out = run(&["--dockerd", "/usr/sbin/dockerd"], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(
        err.contains("already answers") && err.contains("d.sock"),
        "{err}"
    );
    drop(listener);
    // Nothing was started: no netd socket, no record.
    assert!(!dir.join("netd.sock").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// `worker` commands: bad flags are refused before Docker is asked
/// anything, and a missing or foreign DOCKER_HOST is named.
#[test]
fn worker_bad_input_without_docker() {
    let missing =
        std::env::temp_dir().join(format!("conductor-no-docker-{}.sock", std::process::id()));
    let host = format!("unix://{}", missing.display());
    let run = |args: &[&str], docker_host: &str| {
        let out = netd()
            .env("DOCKER_HOST", docker_host)
            .args(args)
            .output()
            .expect("run conductor-netd");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &[
                "worker", "spawn", "--parent", "p", "--memory", "12x", "--", "true",
            ],
            3,
            "\"12x\"",
        ),
        (
            &["worker", "spawn", "--parent", "p", "--cpus", "-1"],
            3,
            "\"-1\"",
        ),
        (
            &["worker", "spawn", "--parent", "p", "-v", "/a:rel"],
            3,
            "\"/a:rel\"",
        ),
        (
            &["worker", "run", "--parent", "p", "-e", "=x", "--", "true"],
            3,
            "\"=x\"",
        ),
        (
            &["worker", "spawn", "--parent", "p", "--name", "a b"],
            3,
            "\"a b\"",
        ),
        (&["worker", "ls"], 7, missing.to_str().unwrap_or_default()),
        (
            &["worker", "spawn", "--parent", "p", "--", "true"],
            7,
            "does not exist",
        ),
    ];
    for (args, code, text) in cases {
        let (got, err) = run(args, &host);
        assert_eq!(got, Some(*code), "{args:?}: {err}");
        assert!(err.contains(text), "{args:?}: {err}");
    }
    let (got, err) = run(&["worker", "ls"], "tcp://127.0.0.1:2375");
    assert_eq!(got, Some(8), "{err}");
    assert!(err.contains("tcp://127.0.0.1:2375"), "{err}");
    // exec needs a command
    let (got, _) = run(&["worker", "exec", "w1"], &host);
    assert_eq!(got, Some(2));
}
