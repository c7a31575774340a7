//! The engine's request path on arbitrary bytes: parse (hickory-server),
//! local answer, policy, encode. Whatever comes in, nothing panics, and any
//! response the engine produces parses and carries the query's id.
#![no_main]

use std::net::Ipv4Addr;
use std::sync::{Arc, OnceLock};

use conductor_dns::proto::op::{Message, MessageType};
use conductor_dns::{ClientScopes, EndpointRecord, Engine, EngineConfig, PolicyQuery, ScopeId, Verdict};
use libfuzzer_sys::fuzz_target;

fn setup() -> (Engine, ClientScopes) {
    let engine = Engine::new(EngineConfig::default()).expect("engine");
    let scope = ScopeId::new("fuzz").expect("scope");
    engine.records().set_scope_domain(&scope, Some("net")).expect("domain");
    for i in 0..8u8 {
        let record = EndpointRecord {
            name: format!("c{i}"),
            aliases: vec!["svc".into()],
            ipv4: vec![Ipv4Addr::new(10, 0, 0, i + 2)],
            ipv6: vec![format!("fd00::{}", i + 2).parse().expect("v6")],
        };
        engine.records().upsert_endpoint(&scope, &format!("e{i}"), &record).expect("record");
    }
    let deny_every_other = |q: &PolicyQuery<'_>| match q.name.len() % 2 {
        0 => Verdict::Refuse,
        _ => Verdict::Allow,
    };
    let client = ClientScopes::new([scope]).with_policy(Arc::new(deny_every_other));
    (engine, client)
}

fuzz_target!(|data: &[u8]| {
    static ENGINE: OnceLock<(Engine, ClientScopes)> = OnceLock::new();
    let (engine, client) = ENGINE.get_or_init(setup);
    if let Some(bytes) = engine.answer_bytes(data, client) {
        let message = Message::from_vec(&bytes).expect("the engine's response parses");
        assert_eq!(message.metadata.id, u16::from_be_bytes([data[0], data[1]]));
        assert_eq!(message.metadata.message_type, MessageType::Response);
    }
});
