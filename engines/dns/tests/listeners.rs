//! Listener lifecycle: held queries released when scopes arrive (or
//! SERVFAIL after the hold), shared listeners told apart by source address,
//! TCP caps and idle timeouts, and removal closing the sockets at once.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::*;
use conductor_dns::proto::op::ResponseCode;
use conductor_dns::proto::rr::RecordType;
use conductor_dns::{ClientScopes, Engine, EngineConfig, Limits, ListenerSockets};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

fn engine_with_hold(hold: Duration) -> Engine {
    Engine::new(EngineConfig {
        hold_timeout: hold,
        ..EngineConfig::default()
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_before_the_scopes_are_held_and_released() {
    let engine = engine_with_hold(Duration::from_secs(2));
    engine
        .records()
        .upsert_endpoint(&scope("n"), "e1", &endpoint("web", &[], &["10.0.0.2"], &[]))
        .unwrap();
    // The daemon opens the socket before it knows the container.
    let l = engine
        .add_namespace_listener(sockets(), None, None)
        .unwrap();
    let at = l.local_addr();
    let early: Vec<_> = (0..5)
        .map(|_| tokio::spawn(async move { ask_udp(at, "web.", RecordType::A).await }))
        .collect();
    let tcp_at = l.tcp_local_addr().unwrap();
    let early_tcp = tokio::spawn(async move { ask_tcp(tcp_at, "web.", RecordType::A).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(l.stats().held, 6);
    l.set_scopes(ClientScopes::new([scope("n")]));
    for query in early {
        assert_eq!(addrs(&query.await.unwrap()), [ip("10.0.0.2")]);
    }
    assert_eq!(addrs(&early_tcp.await.unwrap()), [ip("10.0.0.2")]);
    // Answered with the address, so by the scopes, not by the hold timeout.
    assert_eq!(l.stats().hold_expired, 0);
    l.close().await;
}

#[tokio::test]
async fn held_queries_get_servfail_when_the_scopes_never_come() {
    let engine = engine_with_hold(Duration::from_millis(300));
    let l = engine
        .add_namespace_listener(sockets(), None, None)
        .unwrap();
    let started = Instant::now();
    let answer = ask_udp(l.local_addr(), "web.", RecordType::A).await;
    assert_eq!(rcode(&answer), ResponseCode::ServFail);
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert_eq!(l.stats().hold_expired, 1);
    l.close().await;
}

#[tokio::test]
async fn a_shared_listener_tells_clients_apart_by_source_address() {
    let engine = engine_with_hold(Duration::from_millis(300));
    engine
        .records()
        .upsert_endpoint(&scope("a"), "e1", &endpoint("svc", &[], &["10.1.0.2"], &[]))
        .unwrap();
    engine
        .records()
        .upsert_endpoint(&scope("b"), "e2", &endpoint("svc", &[], &["10.2.0.2"], &[]))
        .unwrap();
    let l = engine.add_shared_listener(sockets(), None).unwrap();
    let (one, two, three) = (ip("127.0.0.2"), ip("127.0.0.3"), ip("127.0.0.4"));
    l.set_client(one, ClientScopes::new([scope("a")]));
    l.set_client(two, ClientScopes::new([scope("b")]));
    let wait = Duration::from_secs(3);
    let ask = |from: IpAddr| ask_udp_from(from, l.local_addr(), "svc.", RecordType::A, wait);
    assert_eq!(addrs(&ask(one).await.unwrap()), [ip("10.1.0.2")]);
    assert_eq!(addrs(&ask(two).await.unwrap()), [ip("10.2.0.2")]);
    // Unknown source: held, then SERVFAIL.
    assert_eq!(rcode(&ask(three).await.unwrap()), ResponseCode::ServFail);
    // Known while held: answered.
    let pending = tokio::spawn(ask_udp_from(
        three,
        l.local_addr(),
        "svc.",
        RecordType::A,
        wait,
    ));
    tokio::time::sleep(Duration::from_millis(100)).await;
    l.set_client(three, ClientScopes::new([scope("b"), scope("a")]));
    assert_eq!(addrs(&pending.await.unwrap().unwrap()), [ip("10.2.0.2")]);
    assert!(l.remove_client(one));
    assert!(!l.remove_client(one));
    assert_eq!(rcode(&ask(one).await.unwrap()), ResponseCode::ServFail);
    l.close().await;
}

fn rebind(addr: SocketAddr) -> bool {
    std::net::UdpSocket::bind(addr).is_ok()
}

/// Closing a listener closes its sockets before `close` returns, even with
/// queries held and forwarded queries in flight (their tasks hold the
/// socket): the port can be bound again at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_listener_closes_its_sockets_at_once() {
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let engine = Engine::new(EngineConfig {
        upstreams: vec![silent.local_addr().unwrap()],
        hold_timeout: Duration::from_secs(30),
        ..EngineConfig::default()
    })
    .unwrap();
    let held = engine
        .add_namespace_listener(sockets(), None, None)
        .unwrap();
    let forwarding = ns_listener(&engine, &[]);
    let kept = ns_listener(&engine, &[]);
    let (held_at, fwd_at) = (held.local_addr(), forwarding.local_addr());
    let (held_tcp, fwd_tcp) = (
        held.tcp_local_addr().unwrap(),
        forwarding.tcp_local_addr().unwrap(),
    );
    // Work in flight on both: a held query, a query waiting on upstream, an
    // open TCP connection.
    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client
        .send_to(&query_message(1, "web.", RecordType::A, false), held_at)
        .await
        .unwrap();
    client
        .send_to(
            &query_message(2, "www.example.", RecordType::A, false),
            fwd_at,
        )
        .await
        .unwrap();
    let mut open_tcp = TcpStream::connect(held_tcp).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(held.stats().held, 1);
    assert_eq!(forwarding.stats().forwarded, 1);
    assert!(!rebind(held_at) && !rebind(fwd_at));

    let started = Instant::now();
    held.close().await;
    forwarding.close().await;
    // Not held until the 30 s hold or the 3 s forwarding deadline ends.
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(rebind(held_at), "UDP socket still open after close");
    assert!(rebind(fwd_at), "UDP socket still open after close");
    assert!(
        std::net::TcpListener::bind(held_tcp).is_ok(),
        "TCP listener still open"
    );
    assert!(
        std::net::TcpListener::bind(fwd_tcp).is_ok(),
        "TCP listener still open"
    );
    // The accepted connection was closed too.
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(1), open_tcp.read(&mut byte)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    // Other listeners are untouched.
    assert_eq!(
        rcode(&ask_udp(kept.local_addr(), "www.example.", RecordType::A).await),
        ResponseCode::ServFail
    );
    kept.close().await;
}

#[tokio::test]
async fn dropping_a_listener_also_closes_its_sockets() {
    let engine = engine(vec![]);
    let l = ns_listener(&engine, &[]);
    let at = l.local_addr();
    drop(l);
    let deadline = Instant::now() + Duration::from_secs(2);
    while !rebind(at) {
        assert!(Instant::now() < deadline, "socket not closed after drop");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn tcp_connections_are_capped_and_idle_ones_closed() {
    let engine = engine(vec![]);
    engine
        .records()
        .upsert_endpoint(&scope("n"), "e1", &endpoint("web", &[], &["10.0.0.2"], &[]))
        .unwrap();
    let limits = Limits {
        tcp_max_connections: 2,
        tcp_idle_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let l = engine
        .add_namespace_listener(
            sockets(),
            Some(ClientScopes::new([scope("n")])),
            Some(limits),
        )
        .unwrap();
    let at = l.tcp_local_addr().unwrap();
    let connected = Instant::now();
    let mut first = TcpStream::connect(at).await.unwrap();
    let _second = TcpStream::connect(at).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The third is closed at once.
    let mut third = TcpStream::connect(at).await.unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_millis(200), third.read(&mut byte)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "third connection not closed: {read:?}"
    );
    assert_eq!(l.stats().tcp_rejected, 1);
    // An idle one is closed after the idle timeout (not before: its timer
    // started when it was accepted), and its slot is free again.
    let read = tokio::time::timeout(Duration::from_secs(2), first.read(&mut byte)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    assert!(connected.elapsed() >= Duration::from_millis(290));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        addrs(&ask_tcp(at, "web.", RecordType::A).await),
        [ip("10.0.0.2")]
    );
    l.close().await;
}

/// The engine serves on threads of its own: the daemon may add listeners
/// from any thread, inside a runtime or not; dropping the engine closes
/// every listener's sockets.
#[test]
fn listeners_work_without_the_callers_runtime_and_die_with_the_engine() {
    let engine = engine(vec![]);
    engine
        .records()
        .upsert_endpoint(&scope("n"), "e1", &endpoint("web", &[], &["10.0.0.2"], &[]))
        .unwrap();
    let l = engine
        .add_namespace_listener(sockets(), Some(ClientScopes::new([scope("n")])), None)
        .unwrap();
    let at = l.local_addr();
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    client
        .send_to(&query_message(5, "web.", RecordType::A, false), at)
        .unwrap();
    let mut buf = [0u8; 512];
    let len = client.recv(&mut buf).unwrap();
    let answer = conductor_dns::proto::op::Message::from_vec(&buf[..len]).unwrap();
    assert_eq!(addrs(&answer), [ip("10.0.0.2")]);
    drop(engine);
    let deadline = Instant::now() + Duration::from_secs(2);
    while !rebind(at) {
        assert!(
            Instant::now() < deadline,
            "socket open after the engine was dropped"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(l);
}

#[tokio::test]
async fn a_listener_without_tcp_serves_udp() {
    let engine = engine(vec![]);
    engine
        .records()
        .upsert_endpoint(&scope("n"), "e1", &endpoint("web", &[], &["10.0.0.2"], &[]))
        .unwrap();
    let udp = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let l = engine
        .add_namespace_listener(
            ListenerSockets { udp, tcp: None },
            Some(ClientScopes::new([scope("n")])),
            None,
        )
        .unwrap();
    assert_eq!(l.tcp_local_addr(), None);
    assert_eq!(
        addrs(&ask_udp(l.local_addr(), "web.", RecordType::A).await),
        [ip("10.0.0.2")]
    );
    l.close().await;
}

/// With several serving threads, listeners are spread over them and each
/// answers.
#[tokio::test]
async fn listeners_spread_over_several_threads() {
    let engine = Engine::new(EngineConfig {
        threads: 3,
        ..EngineConfig::default()
    })
    .unwrap();
    engine
        .records()
        .upsert_endpoint(&scope("n"), "e1", &endpoint("web", &[], &["10.0.0.2"], &[]))
        .unwrap();
    let listeners: Vec<_> = (0..6).map(|_| ns_listener(&engine, &["n"])).collect();
    for l in &listeners {
        assert_eq!(
            addrs(&ask_udp(l.local_addr(), "web.", RecordType::A).await),
            [ip("10.0.0.2")]
        );
    }
    for l in listeners {
        l.close().await;
    }
}
