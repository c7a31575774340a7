//! Names that are not local: forwarded to a stub upstream (a hickory
//! authoritative server on loopback), cached, refused by policy, and turned
//! into SERVFAIL in bounded time when the upstream is down or silent.

mod common;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use conductor_dns::proto::op::ResponseCode;
use conductor_dns::proto::rr::{RData, RecordType};
use conductor_dns::stub::{StubUpstream, STUB_TTL};
use conductor_dns::{ClientScopes, Engine, EngineConfig, ForwardConfig, PolicyQuery, Verdict};

async fn stub() -> StubUpstream {
    StubUpstream::start(
        "fwd.test",
        &[
            ("www", Ipv4Addr::new(192, 0, 2, 10)),
            ("api", Ipv4Addr::new(192, 0, 2, 11)),
        ],
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn forwards_other_names_and_caches_the_answers() {
    let upstream = stub().await;
    let engine = engine(vec![upstream.addr()]);
    engine
        .records()
        .upsert_endpoint(&scope("n"), "e1", &endpoint("web", &[], &["10.0.0.2"], &[]))
        .unwrap();
    let l = ns_listener(&engine, &["n"]);
    let at = l.local_addr();

    let answer = ask_udp(at, "www.fwd.test.", RecordType::A).await;
    assert_eq!(rcode(&answer), ResponseCode::NoError);
    assert_eq!(addrs(&answer), [ip("192.0.2.10")]);
    assert_eq!(upstream.queries(), 1);
    // Cached: the upstream is not asked again, the TTL counts down from the
    // upstream's.
    for _ in 0..20 {
        let again = ask_udp(at, "WWW.fwd.test.", RecordType::A).await;
        assert_eq!(addrs(&again), [ip("192.0.2.10")]);
        assert!(again.answers[0].ttl <= STUB_TTL);
    }
    let again = ask_tcp(l.tcp_local_addr().unwrap(), "www.fwd.test.", RecordType::A).await;
    assert_eq!(addrs(&again), [ip("192.0.2.10")]);
    assert_eq!(upstream.queries(), 1, "answers came from the cache");

    // NXDOMAIN comes back with the zone's SOA (clients cache it negatively),
    // and is cached too.
    let missing = ask_udp(at, "nope.fwd.test.", RecordType::A).await;
    assert_eq!(rcode(&missing), ResponseCode::NXDomain);
    assert!(matches!(
        missing.authorities.first().map(|r| &r.data),
        Some(RData::SOA(_))
    ));
    let asked = upstream.queries();
    assert_eq!(
        rcode(&ask_udp(at, "nope.fwd.test.", RecordType::A).await),
        ResponseCode::NXDomain
    );
    assert_eq!(upstream.queries(), asked);
    // NODATA (name exists, no AAAA).
    let nodata = ask_udp(at, "www.fwd.test.", RecordType::AAAA).await;
    assert_eq!(rcode(&nodata), ResponseCode::NoError);
    assert!(nodata.answers.is_empty());
    // A local name never reaches the upstream.
    let asked = upstream.queries();
    assert_eq!(
        addrs(&ask_udp(at, "web.", RecordType::A).await),
        [ip("10.0.0.2")]
    );
    assert_eq!(upstream.queries(), asked);

    let stats = l.stats();
    // Three misses went upstream (www A, nope A, www AAAA); the rest
    // were answered from the cache.
    assert_eq!(
        (stats.forwarded, stats.cached, stats.local),
        (3, 22, 1),
        "{stats:?}"
    );
    l.close().await;
    upstream.stop().await;
}

#[tokio::test]
async fn upstreams_can_be_replaced_at_runtime() {
    let upstream = stub().await;
    let engine = engine(vec![]);
    let l = ns_listener(&engine, &[]);
    assert_eq!(
        rcode(&ask_udp(l.local_addr(), "api.fwd.test.", RecordType::A).await),
        ResponseCode::ServFail
    );
    engine.set_upstreams(&[upstream.addr()]).unwrap();
    assert_eq!(engine.upstreams(), [upstream.addr()]);
    assert_eq!(
        addrs(&ask_udp(l.local_addr(), "api.fwd.test.", RecordType::A).await),
        [ip("192.0.2.11")]
    );
    l.close().await;
    upstream.stop().await;
}

/// An upstream that takes packets and never answers (UDP) and accepts no
/// connection (TCP backlog only): the client gets SERVFAIL within the
/// forwarding deadline, and the engine answers local names meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_upstream_gives_servfail_in_bounded_time() {
    let silent_udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent_udp.local_addr().unwrap();
    let _silent_tcp = std::net::TcpListener::bind(silent_addr).unwrap();
    let deadline = Duration::from_millis(800);
    let engine = Engine::new(EngineConfig {
        upstreams: vec![silent_addr],
        forward: ForwardConfig {
            deadline,
            attempt_timeout: Duration::from_millis(300),
            ..ForwardConfig::default()
        },
        ..EngineConfig::default()
    })
    .unwrap();
    engine
        .records()
        .upsert_endpoint(&scope("n"), "e1", &endpoint("web", &[], &["10.0.0.2"], &[]))
        .unwrap();
    let l = ns_listener(&engine, &["n"]);
    let at = l.local_addr();

    let started = Instant::now();
    let slow = tokio::spawn(async move { ask_udp(at, "www.example.", RecordType::A).await });
    // While that waits, local names are answered.
    for _ in 0..10 {
        let answer = ask_udp(at, "web.", RecordType::A).await;
        assert_eq!(addrs(&answer), [ip("10.0.0.2")]);
    }
    let answer = slow.await.unwrap();
    let took = started.elapsed();
    assert_eq!(rcode(&answer), ResponseCode::ServFail);
    assert!(took >= Duration::from_millis(250), "took {took:?}");
    assert!(took < deadline + Duration::from_secs(2), "took {took:?}");
    l.close().await;
}

#[tokio::test]
async fn an_upstream_that_refuses_connections_gives_servfail() {
    // A port nobody listens on: ICMP port unreachable, TCP reset.
    let closed = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let engine = engine(vec![closed]);
    let l = ns_listener(&engine, &[]);
    let started = Instant::now();
    let answer = ask_udp(l.local_addr(), "www.example.", RecordType::A).await;
    assert_eq!(rcode(&answer), ResponseCode::ServFail);
    // Within the default 3 s forwarding deadline (plus scheduling slack).
    assert!(started.elapsed() < Duration::from_secs(5));
    l.close().await;
}

#[tokio::test]
async fn policies_refuse_forwarded_names() {
    let upstream = stub().await;
    let engine = engine(vec![upstream.addr()]);
    let net = scope("n");
    engine
        .records()
        .upsert_endpoint(&net, "e1", &endpoint("denied", &[], &["10.0.0.2"], &[]))
        .unwrap();
    // The network's policy: no *.fwd.test except api.
    engine.records().set_scope_policy(
        &net,
        Some(Arc::new(|q: &PolicyQuery<'_>| {
            if q.name.ends_with(".fwd.test") && q.name != "api.fwd.test" {
                Verdict::Refuse
            } else {
                Verdict::Allow
            }
        })),
    );
    let l = ns_listener(&engine, &["n"]);
    let at = l.local_addr();

    let refused = ask_udp(at, "www.fwd.test.", RecordType::A).await;
    assert_eq!(rcode(&refused), ResponseCode::Refused);
    assert_eq!(
        upstream.queries(),
        0,
        "a refused name is not asked upstream"
    );
    assert_eq!(
        addrs(&ask_udp(at, "api.fwd.test.", RecordType::A).await),
        [ip("192.0.2.11")]
    );
    // Local names are not the policy's business.
    assert_eq!(
        addrs(&ask_udp(at, "denied.", RecordType::A).await),
        [ip("10.0.0.2")]
    );

    // A client's own policy adds to its networks' (any refusal wins); the
    // policy sees the client's scopes and the name without the final dot.
    l.set_scopes(
        ClientScopes::new([net.clone()]).with_policy(Arc::new(|q: &PolicyQuery<'_>| {
            assert_eq!(q.scopes.len(), 1);
            if q.name == "api.fwd.test" {
                Verdict::Refuse
            } else {
                Verdict::Allow
            }
        })),
    );
    assert_eq!(
        rcode(&ask_udp(at, "api.fwd.test.", RecordType::A).await),
        ResponseCode::Refused
    );
    assert_eq!(
        rcode(&ask_udp(at, "www.fwd.test.", RecordType::A).await),
        ResponseCode::Refused
    );
    // Removing the network's policy leaves the client's.
    engine.records().set_scope_policy(&net, None);
    assert_eq!(
        addrs(&ask_udp(at, "www.fwd.test.", RecordType::A).await),
        [ip("192.0.2.10")]
    );
    assert_eq!(l.stats().refused, 3);
    l.close().await;
    upstream.stop().await;
}
