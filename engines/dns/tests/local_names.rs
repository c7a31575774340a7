//! Local names: scoping, aliases, scaled services, PTR, case, `name.network`,
//! NODATA, TCP and truncation, and updates visible to the very next query.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use conductor_dns::proto::op::ResponseCode;
use conductor_dns::proto::rr::{RData, RecordType};
use conductor_dns::{ClientScopes, Limits, DOCKER_TTL};

#[tokio::test]
async fn answers_are_scoped_by_the_listeners_networks() {
    let engine = engine(vec![]);
    let records = engine.records();
    records
        .upsert_endpoint(
            &scope("front"),
            "e1",
            &endpoint("web", &[], &["10.1.0.2"], &[]),
        )
        .unwrap();
    records
        .upsert_endpoint(
            &scope("back"),
            "e2",
            &endpoint("db", &[], &["10.2.0.2"], &[]),
        )
        .unwrap();
    records
        .upsert_endpoint(
            &scope("back"),
            "e3",
            &endpoint("web", &[], &["10.2.0.3"], &[]),
        )
        .unwrap();
    let front = ns_listener(&engine, &["front"]);
    let back = ns_listener(&engine, &["back"]);
    let both = ns_listener(&engine, &["back", "front"]);

    let answer = ask_udp(front.local_addr(), "web.", RecordType::A).await;
    assert_eq!(addrs(&answer), [ip("10.1.0.2")]);
    assert_eq!(answer.answers[0].ttl, DOCKER_TTL);
    assert!(answer.metadata.recursion_available);
    // db is not on front's network: not local, forwarded, and with no
    // upstream that is SERVFAIL (never another network's address).
    let answer = ask_udp(front.local_addr(), "db.", RecordType::A).await;
    assert_eq!(rcode(&answer), ResponseCode::ServFail);
    assert!(answer.answers.is_empty());
    assert_eq!(
        addrs(&ask_udp(back.local_addr(), "web.", RecordType::A).await),
        [ip("10.2.0.3")]
    );
    // Several networks: the first one (priority order) that has the name.
    assert_eq!(
        addrs(&ask_udp(both.local_addr(), "web.", RecordType::A).await),
        [ip("10.2.0.3")]
    );
    assert_eq!(
        addrs(&ask_udp(both.local_addr(), "db.", RecordType::A).await),
        [ip("10.2.0.2")]
    );
    for l in [front, back, both] {
        l.close().await;
    }
}

#[tokio::test]
async fn aliases_scaled_services_case_and_nodata() {
    let engine = engine(vec![]);
    let net = scope("n");
    engine
        .records()
        .upsert_endpoint(
            &net,
            "e1",
            &endpoint("app-1", &["app", "api"], &["10.0.0.2"], &["fd00::2"]),
        )
        .unwrap();
    engine
        .records()
        .upsert_endpoint(&net, "e2", &endpoint("app-2", &["app"], &["10.0.0.3"], &[]))
        .unwrap();
    engine
        .records()
        .upsert_endpoint(&net, "e3", &endpoint("v4only", &[], &["10.0.0.4"], &[]))
        .unwrap();
    let l = ns_listener(&engine, &["n"]);
    let at = l.local_addr();

    assert_eq!(
        addrs(&ask_udp(at, "api.", RecordType::A).await),
        [ip("10.0.0.2")]
    );
    assert_eq!(
        addrs(&ask_udp(at, "API.", RecordType::AAAA).await),
        [ip("fd00::2")]
    );
    // A scaled service: every replica, rotated between answers.
    let first = ask_udp(at, "app.", RecordType::A).await;
    assert_eq!(sorted_addrs(&first), [ip("10.0.0.2"), ip("10.0.0.3")]);
    let second = ask_udp(at, "App.", RecordType::A).await;
    assert_eq!(sorted_addrs(&second), [ip("10.0.0.2"), ip("10.0.0.3")]);
    assert_ne!(addrs(&first), addrs(&second), "answers rotate");
    // The question is echoed as asked (0x20 case randomisation checks it),
    // and the answers carry the asker's spelling too.
    assert_eq!(second.queries[0].name().to_ascii(), "App.");
    assert_eq!(second.answers[0].name.to_ascii(), "App.");
    // Local name without an address of that family, or another type:
    // NOERROR without records, not forwarded (Docker's ipv6Miss / MX).
    for (name, qtype) in [
        ("v4only.", RecordType::AAAA),
        ("app.", RecordType::MX),
        ("app.", RecordType::TXT),
    ] {
        let answer = ask_udp(at, name, qtype).await;
        assert_eq!(rcode(&answer), ResponseCode::NoError, "{name} {qtype}");
        assert!(answer.answers.is_empty(), "{name} {qtype}");
    }
    l.close().await;
}

#[tokio::test]
async fn ptr_and_name_dot_network() {
    let engine = engine(vec![]);
    let (front, back) = (scope("id-front"), scope("id-back"));
    engine
        .records()
        .set_scope_domain(&front, Some("frontnet"))
        .unwrap();
    engine
        .records()
        .set_scope_domain(&back, Some("backnet"))
        .unwrap();
    engine
        .records()
        .upsert_endpoint(
            &front,
            "e1",
            &endpoint("api", &[], &["10.1.0.2"], &["fd01::2"]),
        )
        .unwrap();
    engine
        .records()
        .upsert_endpoint(&back, "e2", &endpoint("api", &[], &["10.2.0.2"], &[]))
        .unwrap();
    let l = ns_listener(&engine, &["id-front", "id-back"]);
    let at = l.local_addr();

    assert_eq!(
        addrs(&ask_udp(at, "api.", RecordType::A).await),
        [ip("10.1.0.2")]
    );
    assert_eq!(
        addrs(&ask_udp(at, "api.backnet.", RecordType::A).await),
        [ip("10.2.0.2")]
    );
    assert_eq!(
        addrs(&ask_udp(at, "API.FrontNet.", RecordType::A).await),
        [ip("10.1.0.2")]
    );

    let ptr = |m: &conductor_dns::proto::op::Message| match &m.answers[0].data {
        RData::PTR(p) => p.0.to_ascii(),
        other => panic!("not a PTR: {other:?}"),
    };
    assert_eq!(
        ptr(&ask_udp(at, "2.0.2.10.in-addr.arpa.", RecordType::PTR).await),
        "api.backnet."
    );
    let v6 = conductor_dns::proto::rr::Name::from(ip("fd01::2")).to_ascii();
    assert_eq!(
        ptr(&ask_udp(at, &v6, RecordType::PTR).await),
        "api.frontnet."
    );
    // An address of no scope of this client: forwarded (SERVFAIL here).
    let other = ask_udp(at, "9.9.9.10.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(rcode(&other), ResponseCode::ServFail);
    l.close().await;
}

#[tokio::test]
async fn tcp_answers_and_udp_truncates_big_answers() {
    let engine = engine(vec![]);
    let net = scope("n");
    for i in 0..200u32 {
        let addr = format!("10.0.{}.{}", i / 200, i % 200 + 2);
        engine
            .records()
            .upsert_endpoint(
                &net,
                &format!("e{i}"),
                &endpoint(&format!("r{i}"), &["big"], &[&addr], &[]),
            )
            .unwrap();
    }
    let l = ns_listener(&engine, &["n"]);
    let udp = ask_udp(l.local_addr(), "big.", RecordType::A).await;
    assert!(
        udp.metadata.truncation,
        "200 addresses do not fit in 1232 bytes"
    );
    assert!(udp.answers.len() < 200);
    let tcp = ask_tcp(l.tcp_local_addr().unwrap(), "big.", RecordType::A).await;
    assert!(!tcp.metadata.truncation);
    assert_eq!(tcp.answers.len(), 200);
    l.close().await;
}

/// Queries run in a tight loop while the table changes under them: a name
/// added is answered by the very next query, one removed is gone by the
/// next, and a name that is never touched never misses an answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_are_visible_to_the_next_query_without_a_gap() {
    let engine = engine(vec![]);
    let net = scope("n");
    engine
        .records()
        .upsert_endpoint(&net, "stable", &endpoint("stable", &[], &["10.0.0.2"], &[]))
        .unwrap();
    // Thousands of queries a second: no rate limit in this test.
    let scopes = ClientScopes::new([net.clone()]);
    let l = engine
        .add_namespace_listener(sockets(), Some(scopes), Some(Limits::unlimited_rate()))
        .unwrap();
    let at = l.local_addr();

    let stop = Arc::new(AtomicBool::new(false));
    let stable_answers = Arc::new(AtomicU64::new(0));
    let steady = {
        let (stop, count) = (stop.clone(), stable_answers.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let answer = ask_udp(at, "stable.", RecordType::A).await;
                assert_eq!(
                    addrs(&answer),
                    [ip("10.0.0.2")],
                    "the untouched name missed an answer"
                );
                count.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    for i in 0..300u32 {
        let name = format!("c{i}");
        let addr = format!("10.0.{}.{}", 1 + i / 250, i % 250 + 1);
        engine
            .records()
            .upsert_endpoint(&net, &name, &endpoint(&name, &[], &[&addr], &[]))
            .unwrap();
        let answer = ask_udp(at, &format!("{name}."), RecordType::A).await;
        assert_eq!(addrs(&answer), [ip(&addr)], "{name} right after its insert");
        // Replace its address: the next query sees the new one.
        let moved = format!("10.9.{}.{}", i / 250, i % 250 + 1);
        engine
            .records()
            .upsert_endpoint(&net, &name, &endpoint(&name, &[], &[&moved], &[]))
            .unwrap();
        assert_eq!(
            addrs(&ask_udp(at, &format!("{name}."), RecordType::A).await),
            [ip(&moved)]
        );
        assert!(engine.records().remove_endpoint(&net, &name));
        let gone = ask_udp(at, &format!("{name}."), RecordType::A).await;
        assert!(addrs(&gone).is_empty(), "{name} answered after its removal");
    }
    stop.store(true, Ordering::Relaxed);
    steady.await.unwrap();
    assert!(stable_answers.load(Ordering::Relaxed) > 0);
    let stats = l.stats();
    assert_eq!(stats.rate_limited, 0);
    l.close().await;
}

#[tokio::test]
async fn a_listeners_scopes_change_in_place() {
    let engine = engine(vec![]);
    engine
        .records()
        .upsert_endpoint(&scope("a"), "e1", &endpoint("x", &[], &["10.1.0.2"], &[]))
        .unwrap();
    engine
        .records()
        .upsert_endpoint(&scope("b"), "e2", &endpoint("y", &[], &["10.2.0.2"], &[]))
        .unwrap();
    let l = ns_listener(&engine, &["a"]);
    let at = l.local_addr();
    assert!(addrs(&ask_udp(at, "y.", RecordType::A).await).is_empty());
    // The container joins network b: same sockets, next query sees it.
    l.set_scopes(ClientScopes::new([scope("a"), scope("b")]));
    assert_eq!(
        addrs(&ask_udp(at, "y.", RecordType::A).await),
        [ip("10.2.0.2")]
    );
    assert_eq!(
        addrs(&ask_udp(at, "x.", RecordType::A).await),
        [ip("10.1.0.2")]
    );
    tokio::time::sleep(Duration::from_millis(1)).await;
    l.close().await;
}
