//! Learn the host name a client means from its first bytes: the TLS SNI of a
//! ClientHello (parsed by tls-parser) or the Host header of an HTTP request
//! (parsed by httparse). The bytes read are kept and sent on first, so
//! nothing is lost; a client that sends nothing (a protocol where the server
//! speaks first) costs one sniff timeout.

use std::io;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::upstream::Protocol;

/// The most a sniff reads: one maximal TLS record and its header.
pub const MAX_SNIFF: usize = 5 + tls_parser::MAX_RECORD_LEN as usize;

/// What the first bytes said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sniffed {
    /// The bytes read from the client, to be sent upstream first.
    pub prefix: Vec<u8>,
    pub protocol: Protocol,
    pub host: Option<String>,
}

impl Sniffed {
    pub fn nothing() -> Sniffed {
        Sniffed {
            prefix: Vec::new(),
            protocol: Protocol::Other,
            host: None,
        }
    }
}

/// The verdict on a prefix.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    NeedMore(Protocol),
    Done(Protocol, Option<String>),
}

/// Read from `stream` until its first bytes name a host, prove to be
/// something else, the client stops sending, or `timeout` passes.
pub async fn sniff(stream: &TcpStream, timeout: Duration) -> io::Result<Sniffed> {
    let deadline = Instant::now() + timeout;
    let mut prefix = Vec::with_capacity(2048);
    let mut chunk = vec![0u8; 4096];
    let mut protocol = Protocol::Other;
    loop {
        let ready = tokio::time::timeout_at(deadline, stream.readable()).await;
        match ready {
            Err(_) => break, // quiet client: forward what we have
            Ok(r) => r?,
        }
        let want = (MAX_SNIFF - prefix.len()).min(chunk.len());
        match stream.try_read(&mut chunk[..want]) {
            Ok(0) => break,
            Ok(n) => prefix.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
        match classify(&prefix) {
            Verdict::Done(p, host) => {
                return Ok(Sniffed {
                    prefix,
                    protocol: p,
                    host,
                })
            }
            Verdict::NeedMore(p) => protocol = p,
        }
        if prefix.len() >= MAX_SNIFF {
            break;
        }
    }
    Ok(Sniffed {
        prefix,
        protocol,
        host: None,
    })
}

fn classify(buf: &[u8]) -> Verdict {
    match buf.first() {
        None => Verdict::NeedMore(Protocol::Other),
        Some(0x16) => classify_tls(buf),
        Some(_) => classify_http(buf),
    }
}

fn classify_tls(buf: &[u8]) -> Verdict {
    use tls_parser::{TlsExtension, TlsMessage, TlsMessageHandshake};
    if buf.len() < 5 {
        return Verdict::NeedMore(Protocol::Tls);
    }
    let len = u16::from_be_bytes([buf[3], buf[4]]) as usize;
    if buf.len() < 5 + len {
        return Verdict::NeedMore(Protocol::Tls);
    }
    let Ok((_, record)) = tls_parser::parse_tls_plaintext(&buf[..5 + len]) else {
        // A handshake split over records, or not TLS after all.
        return Verdict::Done(Protocol::Tls, None);
    };
    let host = record.msg.iter().find_map(|m| match m {
        TlsMessage::Handshake(TlsMessageHandshake::ClientHello(hello)) => {
            let (_, exts) = tls_parser::parse_tls_client_hello_extensions(hello.ext?).ok()?;
            exts.iter().find_map(|e| match e {
                TlsExtension::SNI(names) => names
                    .iter()
                    .filter(|(kind, _)| kind.0 == 0) // host_name
                    .find_map(|(_, name)| std::str::from_utf8(name).ok().and_then(dns_name)),
                _ => None,
            })
        }
        _ => None,
    });
    Verdict::Done(Protocol::Tls, host)
}

fn classify_http(buf: &[u8]) -> Verdict {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) => Verdict::NeedMore(Protocol::Http),
        Ok(httparse::Status::Complete(_)) => {
            let host = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("host"))
                .and_then(|h| std::str::from_utf8(h.value).ok())
                .and_then(|v| {
                    let v = v.trim();
                    // "[v6]:port" is an address, which the engine knows anyway.
                    let name = if v.starts_with('[') {
                        return None;
                    } else {
                        v.rsplit_once(':').map_or(v, |(h, _)| h)
                    };
                    dns_name(name)
                });
            Verdict::Done(Protocol::Http, host)
        }
        Err(httparse::Error::TooManyHeaders) => Verdict::Done(Protocol::Http, None),
        Err(_) => Verdict::Done(Protocol::Other, None),
    }
}

/// A host name fit to name a destination: lower-case LDH labels (and `_`),
/// at most 253 bytes, not an IP address literal.
pub fn dns_name(s: &str) -> Option<String> {
    let s = s.trim_end_matches('.');
    if s.is_empty() || s.len() > 253 || s.parse::<std::net::IpAddr>().is_ok() {
        return None;
    }
    let ok = s.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    // All-numeric labels everywhere would be an address in disguise.
    let numeric = s.split('.').all(|l| l.bytes().all(|b| b.is_ascii_digit()));
    (ok && !numeric).then(|| s.to_ascii_lowercase())
}

#[cfg(test)]
pub(crate) mod tests_support {
    /// A TLS 1.2-style ClientHello record carrying `sni` (built by hand, as
    /// a client would send it).
    pub fn client_hello(sni: &str) -> Vec<u8> {
        let name = sni.as_bytes();
        let mut sni_ext = Vec::new();
        let list_len = 3 + name.len();
        sni_ext.extend_from_slice(&[0x00, 0x00]); // server_name
        sni_ext.extend_from_slice(&((list_len + 2) as u16).to_be_bytes());
        sni_ext.extend_from_slice(&(list_len as u16).to_be_bytes());
        sni_ext.push(0); // host_name
        sni_ext.extend_from_slice(&(name.len() as u16).to_be_bytes());
        sni_ext.extend_from_slice(name);
        let mut body = Vec::new();
        body.extend_from_slice(&[0x03, 0x03]);
        body.extend_from_slice(&[7u8; 32]); // random
        body.push(0); // session id
        body.extend_from_slice(&[0x00, 0x02, 0x13, 0x01]); // one cipher suite
        body.extend_from_slice(&[0x01, 0x00]); // null compression
        body.extend_from_slice(&(sni_ext.len() as u16).to_be_bytes());
        body.extend_from_slice(&sni_ext);
        let mut hs = vec![0x01];
        hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&body);
        let mut rec = vec![0x16, 0x03, 0x01];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::client_hello;
    use super::*;

    #[test]
    fn tls_sni_is_found_and_partial_records_wait() {
        let hello = client_hello("Example.TEST");
        assert_eq!(
            classify(&hello),
            Verdict::Done(Protocol::Tls, Some("example.test".into()))
        );
        for cut in [1, 4, 5, 20, hello.len() - 1] {
            assert_eq!(classify(&hello[..cut]), Verdict::NeedMore(Protocol::Tls));
        }
    }

    #[test]
    fn tls_garbage_and_bad_names_give_no_host() {
        let mut junk = vec![0x16, 0x03, 0x01, 0x00, 0x04];
        junk.extend_from_slice(&[0xff; 4]);
        assert_eq!(classify(&junk), Verdict::Done(Protocol::Tls, None));
        for bad in ["10.0.0.1", "a..b", "-a.b", "a b", ""] {
            let hello = client_hello(bad);
            assert_eq!(
                classify(&hello),
                Verdict::Done(Protocol::Tls, None),
                "{bad}"
            );
        }
    }

    #[test]
    fn http_host_is_found() {
        let req = b"GET /x HTTP/1.1\r\nUser-Agent: t\r\nHost: Web.Example:8080\r\n\r\n";
        assert_eq!(
            classify(req),
            Verdict::Done(Protocol::Http, Some("web.example".into()))
        );
        assert_eq!(
            classify(b"GET / HTTP/1.1\r\nHo"),
            Verdict::NeedMore(Protocol::Http)
        );
        assert_eq!(
            classify(b"GET / HTTP/1.1\r\nHost: [2001:db8::1]:80\r\n\r\n"),
            Verdict::Done(Protocol::Http, None)
        );
        assert_eq!(
            classify(b"GET / HTTP/1.1\r\n\r\n"),
            Verdict::Done(Protocol::Http, None)
        );
    }

    #[test]
    fn other_protocols_are_recognised_at_once() {
        assert_eq!(
            classify(b"SSH-2.0-OpenSSH_9.2\r\n"),
            Verdict::Done(Protocol::Other, None)
        );
        assert_eq!(
            classify(&[0, 1, 2, 3]),
            Verdict::Done(Protocol::Other, None)
        );
    }

    #[test]
    fn dns_names() {
        assert_eq!(dns_name("A-b.c_d.example."), Some("a-b.c_d.example".into()));
        assert_eq!(dns_name("1.2.3.4"), None);
        assert_eq!(dns_name("::1"), None);
        assert_eq!(dns_name(&"a".repeat(64)), None);
        assert_eq!(dns_name("x\u{e9}.test"), None);
    }

    #[tokio::test]
    async fn sniff_reads_split_hellos_and_stops_on_quiet_clients() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hello = client_hello("split.test");
        let h2 = hello.clone();
        let client = tokio::spawn(async move {
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            c.write_all(&h2[..10]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(30)).await;
            c.write_all(&h2[10..]).await.unwrap();
            c
        });
        let (server, _) = listener.accept().await.unwrap();
        let s = sniff(&server, Duration::from_secs(5)).await.unwrap();
        assert_eq!(s.host.as_deref(), Some("split.test"));
        assert_eq!(s.prefix, hello);
        let _c = client.await.unwrap();

        // A client that says nothing: the sniff gives up after its timeout.
        let _quiet = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let t = std::time::Instant::now();
        let s = sniff(&server, Duration::from_millis(100)).await.unwrap();
        assert!(s.prefix.is_empty() && s.host.is_none());
        assert!(t.elapsed() >= Duration::from_millis(100));
    }
}
