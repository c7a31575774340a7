//! Privileged probe (root): how binding 127.0.0.11:53 behaves in a fresh
//! network namespace, and the engine serving a namespace through sockets
//! opened inside it exactly as the daemon will (netns `Netns::run`). Run on
//! the kernel and inside gVisor (`runsc do`) by engines/dns/scripts/netns-probe.sh.
//! Prints `ok NAME` / `FAIL NAME: detail` (the vm-tests format, see
//! vm-tests/dns/run.sh); exits 1 on any FAIL. Facts (not expectations) are
//! printed as `info NAME: detail`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use conductor_dns::proto::op::{Message, MessageType, OpCode, Query};
use conductor_dns::proto::rr::{Name, RData, RecordType};
use conductor_dns::{
    BindOptions, ClientScopes, EndpointRecord, Engine, EngineConfig, ListenerSockets, ScopeId,
};
use netns::{Handle, Netns};

const RESOLVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 11)), 53);

struct Namespace(Netns, String);

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Netns::delete(&self.1);
    }
}

fn describe<T>(result: &conductor_dns::Result<T>) -> String {
    match result {
        Ok(_) => "bound".into(),
        Err(e) => format!("{e}"),
    }
}

fn query(name: &str) -> Vec<u8> {
    let mut m = Message::new(0x5151, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(
        Name::from_ascii(name).expect("name"),
        RecordType::A,
    ));
    m.to_vec().expect("query")
}

/// Asks `name` over UDP from inside `ns`; the first A record or an error.
fn ask_inside(ns: &Netns, name: &str) -> Result<Ipv4Addr, String> {
    let bytes = query(name);
    ns.run(move || -> Result<Ipv4Addr, String> {
        let socket = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("client bind: {e}"))?;
        socket
            .set_read_timeout(Some(Duration::from_secs(3)))
            .map_err(|e| e.to_string())?;
        socket
            .send_to(&bytes, RESOLVER)
            .map_err(|e| format!("send: {e}"))?;
        let mut buf = [0u8; 512];
        let len = socket
            .recv(&mut buf)
            .map_err(|e| format!("no answer: {e}"))?;
        let answer = Message::from_vec(&buf[..len]).map_err(|e| e.to_string())?;
        answer
            .answers
            .iter()
            .find_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .ok_or_else(|| {
                format!(
                    "answer without A record: rcode {}",
                    answer.metadata.response_code
                )
            })
    })
    .map_err(|e| e.to_string())?
}

fn lo_state(ns: &Netns, runtime: &tokio::runtime::Runtime) -> String {
    runtime.block_on(async {
        let handle = match Handle::open(ns) {
            Ok(h) => h,
            Err(e) => return e.to_string(),
        };
        let up = handle.link_by_name("lo").await.map(|l| l.up);
        let addrs = handle.addresses(Some(1)).await.map(|a| {
            a.iter()
                .map(|a| format!("{a:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        });
        format!(
            "up {up:?}, addresses [{}]",
            addrs.unwrap_or_else(|e| e.to_string())
        )
    })
}

fn set_lo(ns: &Netns, runtime: &tokio::runtime::Runtime, up: bool) -> Result<(), String> {
    runtime.block_on(async {
        let handle = Handle::open(ns).map_err(|e| e.to_string())?;
        handle.set_up(1, up).await.map_err(|e| e.to_string())
    })
}

fn add_lo_address(ns: &Netns, runtime: &tokio::runtime::Runtime, addr: &str) -> Result<(), String> {
    runtime.block_on(async {
        let handle = Handle::open(ns).map_err(|e| e.to_string())?;
        let net = addr.parse().map_err(|e| format!("{e}"))?;
        handle.add_address(1, net).await.map_err(|e| e.to_string())
    })
}

fn bind_in(ns: &Netns, addr: SocketAddr, freebind: bool) -> conductor_dns::Result<ListenerSockets> {
    let options = BindOptions {
        freebind,
        ..BindOptions::default()
    };
    ns.run(move || ListenerSockets::bind(addr, options))
        .expect("enter the namespace")
}

fn create(name: &str) -> Namespace {
    match Netns::create(name) {
        Ok(ns) => Namespace(ns, name.to_string()),
        Err(e) => {
            println!("FAIL create-namespace: {e}");
            std::process::exit(1);
        }
    }
}

struct Probe {
    runtime: tokio::runtime::Runtime,
    engine: Engine,
    scopes: ClientScopes,
    failed: bool,
}

impl Probe {
    fn report(&mut self, ok: bool, name: &str, detail: String) {
        if ok {
            println!("ok {name}");
            println!("info {name}: {detail}");
        } else {
            println!("FAIL {name}: {detail}");
        }
        self.failed |= !ok;
    }

    /// Hands `sockets` to the engine and asks through them from inside `ns`.
    fn serve(&mut self, ns: &Netns, sockets: ListenerSockets, name: &str) {
        let at = sockets.udp.local_addr().ok();
        let listener = self
            .engine
            .add_namespace_listener(sockets, Some(self.scopes.clone()), None)
            .expect("listener");
        let answer = ask_inside_at(ns, "Web.", at.unwrap_or(RESOLVER));
        self.report(
            answer == Ok(Ipv4Addr::new(10, 0, 0, 2)),
            name,
            format!("{answer:?}"),
        );
        self.runtime.block_on(listener.close());
    }
}

fn ask_inside_at(ns: &Netns, name: &str, server: SocketAddr) -> Result<Ipv4Addr, String> {
    if server == RESOLVER {
        return ask_inside(ns, name);
    }
    let bytes = query(name);
    ns.run(move || -> Result<Ipv4Addr, String> {
        let socket = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("client bind: {e}"))?;
        socket
            .set_read_timeout(Some(Duration::from_secs(3)))
            .map_err(|e| e.to_string())?;
        socket
            .send_to(&bytes, server)
            .map_err(|e| format!("send: {e}"))?;
        let mut buf = [0u8; 512];
        let len = socket
            .recv(&mut buf)
            .map_err(|e| format!("no answer: {e}"))?;
        let answer = Message::from_vec(&buf[..len]).map_err(|e| e.to_string())?;
        answer
            .answers
            .iter()
            .find_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .ok_or_else(|| format!("no A record: rcode {}", answer.metadata.response_code))
    })
    .map_err(|e| e.to_string())?
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let engine = Engine::new(EngineConfig::default()).expect("engine");
    let scope = ScopeId::new("probe").expect("scope");
    let record = EndpointRecord {
        name: "web".into(),
        aliases: vec![],
        ipv4: vec![Ipv4Addr::new(10, 0, 0, 2)],
        ipv6: vec![],
    };
    engine
        .records()
        .upsert_endpoint(&scope, "e1", &record)
        .expect("record");
    let mut probe = Probe {
        runtime,
        engine,
        scopes: ClientScopes::new([scope]),
        failed: false,
    };
    let pid = std::process::id();
    let other_port = SocketAddr::new(RESOLVER.ip(), 54);

    // A pristine namespace: lo down, nothing configured yet.
    let a = create(&format!("dns-engine-probe-a-{pid}"));
    println!(
        "info pristine-initial-lo: {}",
        lo_state(&a.0, &probe.runtime)
    );
    // gVisor creates lo up; ask for down to see whether it can be.
    let down = set_lo(&a.0, &probe.runtime, false);
    println!(
        "info pristine-lo-set-down: {down:?}; {}",
        lo_state(&a.0, &probe.runtime)
    );
    let plain = bind_in(&a.0, RESOLVER, false);
    println!("info pristine-bind-lo-down: {}", describe(&plain));
    let free = bind_in(&a.0, other_port, true);
    println!("info pristine-bind-lo-down-freebind: {}", describe(&free));
    let up = set_lo(&a.0, &probe.runtime, true);
    probe.report(up.is_ok(), "pristine-lo-up", format!("{up:?}"));
    println!(
        "info pristine-lo-after-up: {}",
        lo_state(&a.0, &probe.runtime)
    );
    match plain {
        Ok(s) => probe.serve(
            &a.0,
            s,
            "pristine-serves-through-plain-socket-bound-lo-down",
        ),
        Err(_) => println!("info pristine-serves-through-plain-socket-bound-lo-down: not bound"),
    }
    match free {
        Ok(s) => probe.serve(
            &a.0,
            s,
            "pristine-serves-through-freebind-socket-bound-lo-down",
        ),
        Err(e) => probe.report(false, "pristine-bind-lo-down-freebind", e.to_string()),
    }
    let after = bind_in(&a.0, RESOLVER, false);
    probe.report(after.is_ok(), "pristine-bind-lo-up", describe(&after));
    if let Ok(s) = after {
        // Not reachable from the probe's own namespace: it is a's loopback.
        let outside = UdpSocket::bind("127.0.0.1:0").and_then(|c| {
            c.set_read_timeout(Some(Duration::from_millis(300)))?;
            c.send_to(&query("web."), RESOLVER)?;
            c.recv(&mut [0u8; 512])
        });
        probe.report(
            outside.is_err(),
            "pristine-not-reachable-from-outside",
            format!("{outside:?}"),
        );
        probe.serve(&a.0, s, "pristine-serves-through-socket-bound-lo-up");
    }
    drop(a);

    // An addressed namespace: another address configured first (as when the veth comes before
    // lo), lo still down.
    let b = create(&format!("dns-engine-probe-b-{pid}"));
    let added = add_lo_address(&b.0, &probe.runtime, "10.99.0.1/32");
    println!(
        "info addressed-address-added-lo-down: {added:?}; {}",
        lo_state(&b.0, &probe.runtime)
    );
    let plain = bind_in(&b.0, RESOLVER, false);
    println!("info addressed-bind-lo-down: {}", describe(&plain));
    let free = bind_in(&b.0, other_port, true);
    println!("info addressed-bind-lo-down-freebind: {}", describe(&free));
    let up = set_lo(&b.0, &probe.runtime, true);
    probe.report(up.is_ok(), "addressed-lo-up", format!("{up:?}"));
    if let Ok(s) = plain {
        probe.serve(
            &b.0,
            s,
            "addressed-serves-through-plain-socket-bound-lo-down",
        );
    }
    match free {
        Ok(s) => probe.serve(
            &b.0,
            s,
            "addressed-serves-through-freebind-socket-bound-lo-down",
        ),
        Err(e) => probe.report(false, "addressed-bind-lo-down-freebind", e.to_string()),
    }
    drop(b);

    // What a shared listener asks for its receive queue.
    let asked = 4usize << 20;
    let buffer = |force: bool| {
        use nix::sys::socket::{getsockopt, setsockopt, sockopt};
        let socket = UdpSocket::bind("127.0.0.1:0").expect("probe socket");
        let set = match force {
            true => setsockopt(&socket, sockopt::RcvBufForce, &asked),
            false => setsockopt(&socket, sockopt::RcvBuf, &asked),
        };
        format!(
            "{set:?}, reads back {:?}",
            getsockopt(&socket, sockopt::RcvBuf)
        )
    };
    println!("info receive-buffer-force-4MiB: {}", buffer(true));
    println!("info receive-buffer-plain-4MiB: {}", buffer(false));
    let failed = probe.failed;
    drop(probe);
    std::process::exit(i32::from(failed));
}
