//! Helpers shared by the integration tests: loopback listeners and a tiny
//! DNS client built on hickory-proto.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use conductor_dns::proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use conductor_dns::proto::rr::{Name, RData, RecordType};
use conductor_dns::{
    ClientScopes, EndpointRecord, Engine, EngineConfig, ListenerSockets, NamespaceListener, ScopeId,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

pub fn scope(id: &str) -> ScopeId {
    ScopeId::new(id).unwrap()
}

pub fn endpoint(name: &str, aliases: &[&str], v4: &[&str], v6: &[&str]) -> EndpointRecord {
    EndpointRecord {
        name: name.into(),
        aliases: aliases.iter().map(|a| a.to_string()).collect(),
        ipv4: v4.iter().map(|a| a.parse().unwrap()).collect(),
        ipv6: v6.iter().map(|a| a.parse().unwrap()).collect(),
    }
}

pub fn engine(upstreams: Vec<SocketAddr>) -> Engine {
    Engine::new(EngineConfig {
        upstreams,
        ..EngineConfig::default()
    })
    .unwrap()
}

/// A UDP socket and a TCP listener on one free loopback port of `ip`.
pub fn sockets_on(ip: IpAddr) -> ListenerSockets {
    for _ in 0..100 {
        let udp = std::net::UdpSocket::bind((ip, 0)).unwrap();
        let port = udp.local_addr().unwrap().port();
        if let Ok(tcp) = std::net::TcpListener::bind((ip, port)) {
            return ListenerSockets {
                udp,
                tcp: Some(tcp),
            };
        }
    }
    panic!("no free port pair on {ip}");
}

pub fn sockets() -> ListenerSockets {
    sockets_on(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

pub fn ns_listener(engine: &Engine, scopes: &[&str]) -> NamespaceListener {
    let scopes = ClientScopes::new(scopes.iter().map(|s| scope(s)));
    engine
        .add_namespace_listener(sockets(), Some(scopes), None)
        .unwrap()
}

pub fn query_message(id: u16, name: &str, qtype: RecordType, edns: bool) -> Vec<u8> {
    let mut message = Message::new(id, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        message.set_edns(e);
    }
    message.to_vec().unwrap()
}

/// One UDP question from a fresh socket on `from`; `None` on timeout.
pub async fn ask_udp_from(
    from: IpAddr,
    server: SocketAddr,
    name: &str,
    qtype: RecordType,
    wait: Duration,
) -> Option<Message> {
    let socket = UdpSocket::bind((from, 0)).await.unwrap();
    let id = rand_id();
    socket
        .send_to(&query_message(id, name, qtype, true), server)
        .await
        .unwrap();
    let mut buf = vec![0u8; 65535];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let (len, _) = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf))
            .await
            .ok()?
            .ok()?;
        let message = Message::from_vec(&buf[..len]).unwrap();
        if message.metadata.id == id {
            return Some(message);
        }
    }
}

pub async fn ask_udp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    ask_udp_from(
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        server,
        name,
        qtype,
        Duration::from_secs(5),
    )
    .await
    .unwrap_or_else(|| panic!("no answer for {name} {qtype} from {server}"))
}

pub async fn ask_tcp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let mut stream = TcpStream::connect(server).await.unwrap();
    let query = query_message(rand_id(), name, qtype, false);
    stream
        .write_all(&(query.len() as u16).to_be_bytes())
        .await
        .unwrap();
    stream.write_all(&query).await.unwrap();
    let len = stream.read_u16().await.unwrap();
    let mut buf = vec![0u8; usize::from(len)];
    stream.read_exact(&mut buf).await.unwrap();
    Message::from_vec(&buf).unwrap()
}

pub fn rand_id() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(1);
    NEXT.fetch_add(7919, Ordering::Relaxed)
}

pub fn addrs(message: &Message) -> Vec<IpAddr> {
    message
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

pub fn sorted_addrs(message: &Message) -> Vec<IpAddr> {
    let mut a = addrs(message);
    a.sort();
    a
}

pub fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

pub fn rcode(message: &Message) -> ResponseCode {
    message.metadata.response_code
}

/// A deterministic xorshift generator (no dependency, reproducible runs).
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}
