//! Forwarders on loopback and the manager's bad-input paths (nothing left
//! behind). Unprivileged: loopback only.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::error::ErrorClass;
use crate::state::Store;

struct OneNetns;

impl EndpointAddresses for OneNetns {
    fn address(&self, target: &PortTarget) -> Option<IpAddr> {
        (target == &PortTarget::Netns("srv".into())).then_some(IpAddr::V4(Ipv4Addr::LOCALHOST))
    }
    fn netns_names(&self) -> Vec<String> {
        vec!["srv".into()]
    }
}

fn ports(tag: &str) -> (Arc<Ports>, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Arc::new(Store::open(&dir, false).unwrap());
    (Ports::new(store, Arc::new(OneNetns)), dir)
}

async fn echo_tcp() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    port
}

async fn echo_udp() -> u16 {
    let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = s.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = s.recv_from(&mut buf).await {
            let _ = s.send_to(&buf[..n], from).await;
        }
    });
    port
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn tcp_and_udp_are_forwarded_and_bad_input_leaves_nothing() {
    let (ports, dir) = ports("ports-fwd");
    let target = echo_tcp().await;
    let host = free_port();
    let srv = || PortTarget::Netns("srv".into());
    let spec = PortSpec::parse(&format!("{host}:{target}"), srv()).unwrap();
    ports.add(spec.clone()).await.unwrap();
    let mut c = tokio::net::TcpStream::connect(("127.0.0.1", host))
        .await
        .unwrap();
    c.write_all(b"hello").await.unwrap();
    let mut got = [0u8; 5];
    c.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"hello");

    let utarget = echo_udp().await;
    let uhost = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let uspec = PortSpec::parse(&format!("{uhost}:{utarget}/udp"), srv()).unwrap();
    ports.add(uspec).await.unwrap();
    let u = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    u.send_to(b"ping", ("127.0.0.1", uhost)).await.unwrap();
    let mut buf = [0u8; 16];
    let (n, _) = tokio::time::timeout(std::time::Duration::from_secs(5), u.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"ping");

    let before = std::fs::read(dir.join("ports.json")).unwrap();
    // The same port twice; a port in use by someone else; an unknown
    // container and namespace.
    let e = ports.add(spec.clone()).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Conflict);
    assert!(
        e.to_string().contains(&format!("127.0.0.1:{host}/tcp")),
        "{e}"
    );
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let e = ports
        .add(PortSpec::parse(&format!("{taken_port}:{target}"), srv()).unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.class(), ErrorClass::Conflict);
    assert!(e.to_string().contains("in use"), "{e}");
    let e = ports
        .add(PortSpec::parse("1:80", PortTarget::Container("nope".into())).unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.class(), ErrorClass::NotFound);
    assert!(e.to_string().contains("nope"), "{e}");
    assert_eq!(std::fs::read(dir.join("ports.json")).unwrap(), before);
    assert_eq!(ports.list().await.len(), 2);

    // Removed: the listener closes; restored from the file: bound again.
    ports.remove(&spec.side()).await.unwrap();
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", host))
        .await
        .is_err());
    let again = Ports::new(
        Arc::new(Store::open(&dir.join("other"), false).unwrap()),
        Arc::new(OneNetns),
    );
    std::fs::copy(dir.join("ports.json"), dir.join("other/ports.json")).unwrap();
    drop(ports);
    // The old forwarders close their sockets on their own tasks.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    again.restore().await.unwrap();
    let listed = again.list().await;
    assert_eq!(listed.len(), 1);
    assert!(listed[0].listening, "{listed:?}");
    let _ = SocketAddr::from(([127, 0, 0, 1], 0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_worker_is_reached_at_its_parents_address() {
    let (ports, dir) = ports("ports-worker");
    let parent_ip: IpAddr = "172.18.0.2".parse().unwrap();
    {
        let mut containers = ports.containers.write().unwrap();
        let mut add = |name: &str, id: &str, ip: Option<IpAddr>, parent: Option<&str>| {
            containers.insert(
                name.to_string(),
                ContainerAddr {
                    id: id.to_string(),
                    ip,
                    exposed: vec![],
                    shares_network_of: parent.map(str::to_string),
                },
            );
        };
        add("parent", "c0ffee0123", Some(parent_ip), None);
        // Docker records the parent as an id (from the API) or a name.
        add("by-id", "beef01", None, Some("c0ffee0123"));
        add("by-prefix", "beef02", None, Some("c0ffee"));
        add("by-name", "beef03", None, Some("parent"));
        add("orphan", "beef04", None, Some("gone"));
        add("loop-a", "a1", None, Some("loop-b"));
        add("loop-b", "b1", None, Some("loop-a"));
    }
    for worker in ["by-id", "by-prefix", "by-name"] {
        assert_eq!(
            ports.address(&PortTarget::Container(worker.into())),
            Some(parent_ip),
            "{worker}"
        );
    }
    for none in ["orphan", "loop-a", "missing"] {
        assert_eq!(
            ports.address(&PortTarget::Container(none.into())),
            None,
            "{none}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
