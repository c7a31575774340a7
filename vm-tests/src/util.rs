//! Helpers shared by suites: TCP echo inside namespaces.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use netns::Netns;

/// An echo server listening inside `ns`; the listening socket keeps the
/// namespace it was created in, so the accept thread can run anywhere.
/// Serves `connections` connections, then exits.
pub fn spawn_echo_server(
    ns: &Netns,
    addr: SocketAddr,
    connections: usize,
) -> Result<std::thread::JoinHandle<()>, String> {
    let listener = ns
        .run(move || TcpListener::bind(addr))
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("bind {addr} in {}: {e}", ns.describe()))?;
    Ok(std::thread::spawn(move || {
        for _ in 0..connections {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 256];
            if let Ok(n) = s.read(&mut buf) {
                let _ = s.write_all(&buf[..n]);
            }
        }
    }))
}

/// Connect from inside `ns` to `addr`, send a line and expect it echoed.
pub fn echo_from(ns: &Netns, addr: SocketAddr) -> Result<(), String> {
    let stream = ns
        .run(move || TcpStream::connect_timeout(&addr, Duration::from_secs(5)))
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("connect {} -> {addr}: {e}", ns.describe()))?;
    let mut s = stream;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let msg = format!("hello from {}", ns.describe());
    s.write_all(msg.as_bytes())
        .map_err(|e| format!("send to {addr}: {e}"))?;
    let mut buf = vec![0u8; msg.len()];
    s.read_exact(&mut buf)
        .map_err(|e| format!("echo from {addr}: {e}"))?;
    if buf != msg.as_bytes() {
        return Err(format!("echo from {addr} differs"));
    }
    Ok(())
}
