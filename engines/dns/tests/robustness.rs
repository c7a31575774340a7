//! Bad input and abuse: malformed packets (hand-made and random, in-process
//! and over sockets) never crash or wedge anything; a flooding client is
//! rate-limited and the others keep their answers.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use conductor_dns::proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use conductor_dns::proto::rr::{Name, RecordType};
use conductor_dns::{ClientScopes, Engine, Limits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

fn local_engine() -> (Engine, ClientScopes) {
    let engine = engine(vec![]);
    engine
        .records()
        .upsert_endpoint(
            &scope("n"),
            "e1",
            &endpoint("web", &["app"], &["10.0.0.2"], &["fd00::2"]),
        )
        .unwrap();
    (engine, ClientScopes::new([scope("n")]))
}

fn response(engine: &Engine, client: &ClientScopes, raw: &[u8]) -> Option<Message> {
    engine
        .answer_bytes(raw, client)
        .map(|bytes| Message::from_vec(&bytes).expect("the engine's own response parses"))
}

#[test]
fn hand_made_malformed_messages() {
    let (engine, client) = local_engine();
    let valid = query_message(0x1234, "web.", RecordType::A, false);

    // Shorter than a header: nothing to answer.
    assert!(engine.answer_bytes(&valid[..11], &client).is_none());
    assert!(engine.answer_bytes(&[], &client).is_none());
    // A header announcing a question that is not there: FORMERR, same id.
    let formerr = response(&engine, &client, &valid[..12]).unwrap();
    assert_eq!(
        (formerr.metadata.id, rcode(&formerr)),
        (0x1234, ResponseCode::FormErr)
    );
    // A truncated question.
    assert_eq!(
        rcode(&response(&engine, &client, &valid[..valid.len() - 3]).unwrap()),
        ResponseCode::FormErr
    );
    // A compression pointer that points at itself.
    let mut looped = valid[..12].to_vec();
    looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    assert_eq!(
        rcode(&response(&engine, &client, &looped).unwrap()),
        ResponseCode::FormErr
    );
    // A response (QR set) is never answered (no reflection).
    let mut reflected = valid.clone();
    reflected[2] |= 0x80;
    assert!(engine.answer_bytes(&reflected, &client).is_none());
    // Another opcode: NOTIMP.
    let mut status = Message::new(7, MessageType::Query, OpCode::Status);
    status.add_query(Query::query(
        Name::from_ascii("web.").unwrap(),
        RecordType::A,
    ));
    assert_eq!(
        rcode(&response(&engine, &client, &status.to_vec().unwrap()).unwrap()),
        ResponseCode::NotImp
    );
    // Two questions: FORMERR. None: FORMERR.
    let mut two = Message::new(8, MessageType::Query, OpCode::Query);
    two.add_query(Query::query(
        Name::from_ascii("web.").unwrap(),
        RecordType::A,
    ));
    two.add_query(Query::query(
        Name::from_ascii("app.").unwrap(),
        RecordType::A,
    ));
    assert_eq!(
        rcode(&response(&engine, &client, &two.to_vec().unwrap()).unwrap()),
        ResponseCode::FormErr
    );
    let none = Message::new(9, MessageType::Query, OpCode::Query);
    assert_eq!(
        rcode(&response(&engine, &client, &none.to_vec().unwrap()).unwrap()),
        ResponseCode::FormErr
    );
    // EDNS version 1: BADVERS.
    let mut v1 = Message::new(10, MessageType::Query, OpCode::Query);
    v1.add_query(Query::query(
        Name::from_ascii("web.").unwrap(),
        RecordType::A,
    ));
    let mut edns = Edns::new();
    edns.set_version(1);
    v1.set_edns(edns);
    // (16 is BADVERS in a response with OPT; hickory decodes it as BADSIG.)
    let badvers = response(&engine, &client, &v1.to_vec().unwrap()).unwrap();
    assert_eq!(u16::from(rcode(&badvers)), 16);
    // The valid one still works.
    assert_eq!(
        addrs(&response(&engine, &client, &valid).unwrap()),
        [ip("10.0.0.2")]
    );
}

/// Inputs the fuzz target found (engines/dns/fuzz): each once broke the
/// invariant that the engine's responses parse.
#[test]
fn fuzz_regressions() {
    let (engine, client) = local_engine();
    // 17 questions whose names hold compression pointers into the
    // request's other sections: echoing their bytes made an unparseable
    // response.
    let raw = include_bytes!("data/fuzz-question-pointers.bin");
    let answer = response(&engine, &client, raw).expect("answered");
    assert_eq!(answer.metadata.id, u16::from_be_bytes([raw[0], raw[1]]));

    // The same with an unknown opcode (NOTIMP echoed the questions).
    let raw = include_bytes!("data/fuzz-notimp-many-questions.bin");
    let answer = response(&engine, &client, raw).expect("answered");
    assert_eq!(rcode(&answer), ResponseCode::NotImp);

    // One question whose name is a pointer forward into the additional
    // section (offset 18: "web." in an A record there).
    let mut raw = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1];
    raw.extend_from_slice(&[0xc0, 18, 0, 1, 0, 1]);
    raw.extend_from_slice(&[
        3, b'w', b'e', b'b', 0, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 0, 9,
    ]);
    if let Some(answer) = response(&engine, &client, &raw) {
        assert_eq!(answer.metadata.id, 0x1234);
        if rcode(&answer) == ResponseCode::NoError {
            assert_eq!(addrs(&answer), [ip("10.0.0.2")]);
        }
    }
}

/// Random bytes, and valid queries with random bytes flipped (which reach
/// deeper into the parser): every response the engine produces parses and
/// carries the query's id.
#[test]
fn random_and_mutated_messages_never_break_the_request_path() {
    let (engine, client) = local_engine();
    let seeds: Vec<Vec<u8>> = [
        ("web.", RecordType::A),
        ("app.", RecordType::AAAA),
        ("2.0.0.10.in-addr.arpa.", RecordType::PTR),
        ("x.example.", RecordType::TXT),
    ]
    .iter()
    .map(|(n, t)| query_message(0x4242, n, *t, true))
    .collect();
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut answered = 0;
    for i in 0..200_000u32 {
        let raw = if i % 2 == 0 {
            let len = (rng.next() % 600) as usize;
            rng.bytes(len)
        } else {
            let mut raw = seeds[(rng.next() % seeds.len() as u64) as usize].clone();
            for _ in 0..=(rng.next() % 4) {
                let at = (rng.next() as usize) % raw.len();
                raw[at] ^= 1 << (rng.next() % 8);
            }
            if rng.next().is_multiple_of(4) {
                raw.truncate((rng.next() as usize) % raw.len());
            }
            raw
        };
        if let Some(bytes) = engine.answer_bytes(&raw, &client) {
            let message = Message::from_vec(&bytes)
                .unwrap_or_else(|e| panic!("unparseable response {bytes:02x?} to {raw:02x?}: {e}"));
            assert_eq!(message.metadata.id, u16::from_be_bytes([raw[0], raw[1]]));
            assert_eq!(message.metadata.message_type, MessageType::Response);
            answered += 1;
        }
    }
    assert!(answered > 50_000, "only {answered} answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_sockets_leaves_the_listener_serving() {
    let (engine, client) = local_engine();
    let l = engine
        .add_namespace_listener(sockets(), Some(client), Some(Limits::unlimited_rate()))
        .unwrap();
    let (udp_at, tcp_at) = (l.local_addr(), l.tcp_local_addr().unwrap());

    let sender = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut rng = XorShift(42);
    for _ in 0..20_000 {
        let len = (rng.next() % 700) as usize;
        sender.send_to(&rng.bytes(len), udp_at).await.unwrap();
    }
    // A datagram longer than the receive buffer.
    sender.send_to(&vec![0xab; 9000], udp_at).await.unwrap();
    // TCP: random frames, a zero length, a length with no body, a huge one.
    for frame in [rng.bytes(40), vec![], vec![0xff; 3]] {
        let mut stream = TcpStream::connect(tcp_at).await.unwrap();
        stream
            .write_all(&(frame.len() as u16).to_be_bytes())
            .await
            .unwrap();
        stream.write_all(&frame).await.unwrap();
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut sink)).await;
    }
    let mut half = TcpStream::connect(tcp_at).await.unwrap();
    half.write_all(&[0xff, 0xff, 1, 2, 3]).await.unwrap();
    drop(half);

    assert_eq!(
        addrs(&ask_udp(udp_at, "web.", RecordType::A).await),
        [ip("10.0.0.2")]
    );
    assert_eq!(
        addrs(&ask_tcp(tcp_at, "web.", RecordType::A).await),
        [ip("10.0.0.2")]
    );
    let stats = l.stats();
    assert!(stats.malformed > 0 && stats.ignored > 0, "{stats:?}");
    l.close().await;
}

/// Sends the same query to `to` from `from` until `stop`: as fast as one
/// thread can in a release build (what CI runs). An unoptimised build of
/// the engine drains a shared socket ~10x slower than a sender fills it, so
/// there the flood is paced to 40,000 queries/s (still 80x the source
/// limit). Returns how many were sent.
fn flood(from: IpAddr, to: SocketAddr, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let socket = std::net::UdpSocket::bind((from, 0)).unwrap();
        socket.connect(to).unwrap();
        let query = query_message(1, "web.", RecordType::A, false);
        let pace = cfg!(debug_assertions).then(|| Duration::from_micros(25));
        let started = Instant::now();
        let mut sent: u64 = 0;
        while !stop.load(Ordering::Relaxed) {
            if socket.send(&query).is_ok() {
                sent += 1;
            }
            if let Some(gap) = pace {
                let due = started + gap * u32::try_from(sent).unwrap_or(u32::MAX);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
        }
        sent
    })
}

/// Asks `n` questions one after another, each with one try and a 1 s
/// timeout (no retry hides a loss); returns the answered ones.
async fn measure(from: IpAddr, at: SocketAddr, n: usize) -> usize {
    let mut answered = 0;
    for _ in 0..n {
        if let Some(m) = ask_udp_from(from, at, "web.", RecordType::A, Duration::from_secs(1)).await
        {
            assert_eq!(addrs(&m), [ip("10.0.0.2")]);
            answered += 1;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    answered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_namespace_does_not_starve_another() {
    let (engine, client) = local_engine();
    let limits = Limits {
        source_qps: 500,
        source_burst: 500,
        ..Limits::default()
    };
    let noisy = engine
        .add_namespace_listener(sockets(), Some(client.clone()), Some(limits.clone()))
        .unwrap();
    let quiet = engine
        .add_namespace_listener(sockets(), Some(client), Some(limits))
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let flooder = flood(ip("127.0.0.1"), noisy.local_addr(), stop.clone());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let answered = measure(ip("127.0.0.1"), quiet.local_addr(), 200).await;
    stop.store(true, Ordering::Relaxed);
    let sent = tokio::task::spawn_blocking(move || flooder.join().unwrap())
        .await
        .unwrap();
    let seconds = started.elapsed().as_secs_f64();

    let noisy_stats = noisy.stats();
    assert_eq!(
        answered, 200,
        "the quiet client lost answers during the flood"
    );
    assert!(noisy_stats.rate_limited > 0, "{noisy_stats:?}");
    // Served at most the burst plus the rate over the flood's duration.
    let allowed = 500.0 + 500.0 * seconds + 50.0;
    assert!(
        (noisy_stats.queries as f64) <= allowed,
        "{} served of {sent} sent in {seconds:.1} s",
        noisy_stats.queries
    );
    noisy.close().await;
    quiet.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_source_does_not_starve_others_on_a_shared_listener() {
    let (engine, client) = local_engine();
    let limits = Limits {
        source_qps: 500,
        source_burst: 500,
        ..Limits::shared()
    };
    let shared = engine.add_shared_listener(sockets(), Some(limits)).unwrap();
    let (noisy, quiet) = (ip("127.0.0.2"), ip("127.0.0.3"));
    shared.set_client(noisy, client.clone());
    shared.set_client(quiet, client);
    let stop = Arc::new(AtomicBool::new(false));
    let flooder = flood(noisy, shared.local_addr(), stop.clone());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let answered = measure(quiet, shared.local_addr(), 200).await;
    stop.store(true, Ordering::Relaxed);
    let sent = tokio::task::spawn_blocking(move || flooder.join().unwrap())
        .await
        .unwrap();
    let stats = shared.stats();
    eprintln!(
        "shared listener: {answered}/200 answered while {sent} flood packets were sent; {stats:?}"
    );
    assert!(stats.rate_limited > 0, "{stats:?}");
    assert_eq!(
        answered, 200,
        "the quiet client lost answers during the flood"
    );
    shared.close().await;
}
