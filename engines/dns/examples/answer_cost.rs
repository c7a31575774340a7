//! Cost of the in-process request path (parse, lookup, encode) per query:
//! `cargo run --release -p conductor-dns --example answer_cost`.
use std::time::Instant;

use conductor_dns::proto::op::{Message, MessageType, OpCode, Query};
use conductor_dns::proto::rr::{Name, RecordType};
use conductor_dns::{ClientScopes, EndpointRecord, Engine, EngineConfig, ScopeId};

fn main() {
    let engine = Engine::new(EngineConfig::default()).expect("engine");
    let scope = ScopeId::new("s").expect("scope");
    for i in 0..1000u32 {
        let record = EndpointRecord {
            name: format!("c{i}"),
            aliases: vec![],
            ipv4: vec![std::net::Ipv4Addr::from(0x0a58_0000 + i)],
            ipv6: vec![],
        };
        engine
            .records()
            .upsert_endpoint(&scope, &format!("c{i}"), &record)
            .expect("record");
    }
    let client = ClientScopes::new([scope]);
    let queries: Vec<Vec<u8>> = (0..1000)
        .map(|i| {
            let mut m = Message::new(1, MessageType::Query, OpCode::Query);
            let name = Name::from_ascii(format!("c{i}.")).expect("name");
            m.add_query(Query::query(name, RecordType::A));
            m.to_vec().expect("query")
        })
        .collect();
    let n = 1_000_000;
    let started = Instant::now();
    let mut bytes = 0;
    for i in 0..n {
        let query = &queries[i % queries.len()];
        bytes += engine.answer_bytes(query, &client).map_or(0, |b| b.len());
    }
    let per = started.elapsed().as_nanos() as f64 / n as f64;
    println!("{per:.0} ns per container-name query ({bytes} bytes answered)");
}
