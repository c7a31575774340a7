//! api-flood: open many connections to conductor-netd's socket and hold
//! them, as a careless or hostile client would (tests of the API server's
//! caps and time-outs, from Rust tests and from vm-tests/agent/run.sh).
//!
//! `api-flood SOCKET COUNT HOLD_SECS [silent|partial-headers]`
//!
//! Prints `opened K of COUNT` once the connections are made, holds them for
//! HOLD_SECS, then prints `closed C open O` (C: the daemon closed them).

#![forbid(unsafe_code)]

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(socket), Some(count), Some(hold)) = (
        args.first(),
        args.get(1).and_then(|c| c.parse::<usize>().ok()),
        args.get(2).and_then(|h| h.parse::<f64>().ok()),
    ) else {
        eprintln!("usage: api-flood SOCKET COUNT HOLD_SECS [silent|partial-headers]");
        std::process::exit(2);
    };
    let partial = args.get(3).map(String::as_str) == Some("partial-headers");
    raise_fd_limit();
    let mut conns = Vec::with_capacity(count);
    for _ in 0..count {
        match UnixStream::connect(socket) {
            Ok(mut s) => {
                if partial {
                    let _ = s.write_all(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n");
                }
                conns.push(s);
            }
            Err(e) if e.raw_os_error() == Some(nix::errno::Errno::EMFILE as i32) => break,
            Err(_) => {}
        }
    }
    println!("opened {} of {count}", conns.len());
    std::thread::sleep(Duration::from_secs_f64(hold));
    let mut closed = 0;
    for s in &mut conns {
        let _ = s.set_nonblocking(true);
        let mut buf = [0u8; 4096];
        // Drain whatever was answered; closed when the stream ends.
        loop {
            match s.read(&mut buf) {
                Ok(0) => {
                    closed += 1;
                    break;
                }
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    closed += 1;
                    break;
                }
            }
        }
    }
    println!("closed {closed} open {}", conns.len() - closed);
}

fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}
