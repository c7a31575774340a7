//! `conductor-netd demo`: a self-contained tour in throwaway namespaces.
//!
//! It creates three named namespaces (`cnd-demo-PID-host`, `-a`, `-b`),
//! starts a daemon inside the first one (so its bridge and veths never touch
//! the machine's own namespace) with a temporary state directory and socket,
//! creates a network, attaches the other two, shows `status`, runs a TCP
//! echo from one to the other, and removes everything again.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use netns::{Netns, ScratchNamespaces};

use crate::api::types::{AttachRequest, CreateNetwork};
use crate::api::Client;
use crate::error::{Error, Result};
use crate::render;

/// Drops in order: the daemon (by pid), then the namespaces, then the
/// temporary directory.
struct Cleanup {
    daemon: Option<Child>,
    namespaces: ScratchNamespaces,
    dir: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn step(cmd: &str) {
    println!("\n$ conductor-netd {cmd}");
}

pub fn run(verbose: bool) -> Result<()> {
    crate::privileges::require().map_err(|e| Error::Permission(format!("demo: {e}")))?;
    let base = format!("cnd-demo-{}", std::process::id());
    let dir = std::env::temp_dir().join(&base);
    std::fs::create_dir_all(&dir).map_err(|e| Error::state("create", &dir, e))?;
    let mut cleanup = Cleanup {
        daemon: None,
        namespaces: ScratchNamespaces::new(&base),
        dir: dir.clone(),
    };
    let mut make = |suffix: &str| -> Result<Netns> {
        cleanup
            .namespaces
            .create(suffix)
            .map_err(|e| Error::kernel("demo: create namespace", e))
    };
    let host = make("host")?;
    let a = make("a")?;
    let b = make("b")?;
    let (a_name, b_name) = (cleanup.namespaces.name("a"), cleanup.namespaces.name("b"));
    let socket = dir.join("netd.sock");
    let state = dir.join("state");

    step(&format!(
        "serve --socket {} --state-dir {}    # inside namespace {base}-host",
        socket.display(),
        state.display()
    ));
    let exe = std::env::current_exe().map_err(|e| Error::Internal(format!("own path: {e}")))?;
    let child = host
        .run(|| {
            Command::new(&exe)
                .arg("serve")
                .arg("--socket")
                .arg(&socket)
                .arg("--state-dir")
                .arg(&state)
                .arg("--no-probe")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(if verbose {
                    Stdio::inherit()
                } else {
                    Stdio::null()
                })
                .spawn()
        })
        .map_err(|e| Error::kernel("demo: enter the host namespace", e))?
        .map_err(|e| Error::Internal(format!("demo: start the daemon: {e}")))?;
    println!("daemon started (pid {})", child.id());
    cleanup.daemon = Some(child);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(e.to_string()))?;
    let client = Client::new(&socket);
    rt.block_on(async {
        wait_ready(&client, &socket).await?;
        step("network create demo");
        let net = client
            .create_network(&CreateNetwork {
                name: "demo".into(),
                ..Default::default()
            })
            .await?;
        println!(
            "created network demo (bridge {}, subnet {}, gateway {})",
            net.network.bridge, net.network.subnet, net.network.gateway
        );
        let mut addrs = Vec::new();
        for ns in [&a_name, &b_name] {
            step(&format!("attach demo --netns {ns}"));
            let started = Instant::now();
            let r = client
                .attach(
                    "demo",
                    &AttachRequest {
                        netns: Some(ns.clone()),
                        ..Default::default()
                    },
                )
                .await?;
            println!(
                "{}  [{:.1} ms]",
                render::attach_line(&r),
                started.elapsed().as_secs_f64() * 1e3
            );
            addrs.push(r.endpoint.endpoint.ipv4.addr());
        }
        step("status");
        let status = client.status().await?;
        print!("{}", render::status_tree(&status));

        let server = SocketAddr::new(addrs[0].into(), 7777);
        println!("\nTCP echo: {b_name} -> {server} (listener inside {a_name})");
        let echoed = echo(&a, &b, server)?;
        println!("sent and received back {echoed:?}: ok");

        step("network rm demo --force");
        let r = client.remove_network("demo", true).await?;
        println!(
            "removed network {} (detached {} endpoint(s))",
            r.removed, r.detached
        );
        Ok::<(), Error>(())
    })?;
    drop(host);
    drop(a);
    drop(b);
    drop(cleanup);
    println!("\ncleaned up: daemon stopped, namespaces and temporary state removed");
    Ok(())
}

async fn wait_ready(client: &Client, socket: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match client.status().await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                return Err(Error::Unreachable(format!(
                    "demo: the daemon did not come up on {}: {e}",
                    socket.display()
                )))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

fn echo(server_ns: &Netns, client_ns: &Netns, addr: SocketAddr) -> Result<String> {
    let listener = server_ns
        .run(move || TcpListener::bind(addr))
        .map_err(|e| Error::kernel("demo: enter namespace", e))?
        .map_err(|e| Error::Internal(format!("demo: listen on {addr}: {e}")))?;
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut buf = [0u8; 128];
        let n = s.read(&mut buf)?;
        s.write_all(&buf[..n])
    });
    let msg = "hello across the bridge".to_string();
    let stream = client_ns
        .run(move || TcpStream::connect_timeout(&addr, Duration::from_secs(5)))
        .map_err(|e| Error::kernel("demo: enter namespace", e))?
        .map_err(|e| Error::Internal(format!("demo: connect to {addr}: {e}")))?;
    let mut s = stream;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| Error::Internal(e.to_string()))?;
    s.write_all(msg.as_bytes())
        .map_err(|e| Error::Internal(format!("demo: send: {e}")))?;
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back)
        .map_err(|e| Error::Internal(format!("demo: receive: {e}")))?;
    let _ = server.join();
    let back = String::from_utf8_lossy(&back).to_string();
    if back != msg {
        return Err(Error::Internal(format!("demo: echo differs: {back:?}")));
    }
    Ok(back)
}
