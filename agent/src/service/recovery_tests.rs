//! Service tests for the hardening cases (issue 10) over the in-memory
//! kernel: re-created namespaces, concurrent detaches, the daemon's own
//! namespace, bridge names in our prefix, and recovery that adopts what the
//! kernel holds when records are missing.

use std::sync::Arc;
use std::time::Duration;

use super::tests::Env;
use super::*;
use crate::api::types::{AttachRequest, CreateNetwork};
use crate::kernel::fake::{FakeKernel, FakeLink, FakePeer};
use crate::model::Target;

fn net(name: &str) -> CreateNetwork {
    CreateNetwork {
        name: name.into(),
        ..Default::default()
    }
}

fn attach_ns(name: &str) -> AttachRequest {
    AttachRequest {
        netns: Some(name.into()),
        ..Default::default()
    }
}

fn journal(env: &Env) -> std::path::PathBuf {
    env.dir.join("state/endpoints.log")
}

fn journaled(env: &Env) -> Vec<String> {
    crate::state::journaled_endpoint_ids(&env.dir.join("state")).unwrap()
}

#[tokio::test]
async fn a_recreated_namespace_is_attached_anew() {
    let env = Env::new("recreated");
    let svc = env.service().await;
    svc.create_network(net("n")).await.unwrap();
    env.ns("s1");
    let first = svc.attach("n", attach_ns("s1")).await.unwrap();
    let old = first.endpoint.endpoint;
    // `ip netns del s1; ip netns add s1`: the kernel deletes the veth with
    // the namespace, and the new namespace gets the old one's inode number
    // (here: the same file, so the same identity).
    assert!(svc.kernel().remove_link(&old.host_ifname));
    let again = svc.attach("n", attach_ns("s1")).await.unwrap();
    assert!(
        again.created,
        "answered 'already attached' with a dead endpoint"
    );
    let new = again.endpoint.endpoint;
    assert_ne!(new.id, old.id);
    assert!(svc.kernel().links().contains_key(&new.host_ifname));
    assert_eq!(journaled(&env), vec![new.id.clone()]);
    assert_eq!(svc.endpoints(None).unwrap().len(), 1);
    // A live endpoint is still answered idempotently.
    assert!(!svc.attach("n", attach_ns("s1")).await.unwrap().created);
}

#[tokio::test]
async fn concurrent_detaches_of_one_endpoint_answer_once_detached() {
    let env = Env::new("detaches");
    let kernel = FakeKernel::new(&env.netns_dir);
    kernel.delay("delete_link", Duration::from_millis(50));
    let svc = Arc::new(env.service_with(kernel).await);
    svc.create_network(net("n")).await.unwrap();
    for name in ["a", "b"] {
        env.ns(name);
        svc.attach("n", attach_ns(name)).await.unwrap();
    }
    let by_target: Vec<_> = (0..20)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move {
                svc.detach("n", &Target::Netns("a".into()), true)
                    .await
                    .map(|r| r.detached)
            })
        })
        .collect();
    let mut detached = 0;
    for t in by_target {
        if t.await.unwrap().expect("a concurrent detach failed") {
            detached += 1;
        }
    }
    assert_eq!(detached, 1);
    // The same by id (DELETE /v1/endpoints/{id}).
    let id = svc.endpoints(None).unwrap()[0].endpoint.id.clone();
    let by_id: Vec<_> = (0..20)
        .map(|_| {
            let (svc, id) = (svc.clone(), id.clone());
            tokio::spawn(async move { svc.detach_id(&id, true).await.map(|r| r.detached) })
        })
        .collect();
    let mut detached = 0;
    for t in by_id {
        if t.await.unwrap().expect("a concurrent detach by id failed") {
            detached += 1;
        }
    }
    assert_eq!(detached, 1);
    // An id never known is still not found.
    assert_eq!(
        svc.detach_id("cn-none", true).await.unwrap_err().code(),
        "not_found"
    );
}

#[tokio::test]
async fn the_daemons_own_namespace_is_refused_unless_allowed() {
    let env = Env::new("host-ns");
    let svc = env.service().await;
    svc.create_network(net("n")).await.unwrap();
    // A name bound to it (a symlink stands for the bind mount here).
    std::os::unix::fs::symlink("/proc/self/ns/net", env.netns_dir.join("host")).unwrap();
    let own = [
        AttachRequest {
            netns_path: Some("/proc/self/ns/net".into()),
            ..Default::default()
        },
        AttachRequest {
            pid: Some(std::process::id() as i32),
            ..Default::default()
        },
        attach_ns("host"),
    ];
    for req in &own {
        let e = svc.attach("n", req.clone()).await.unwrap_err();
        assert_eq!(e.code(), "forbidden", "{req:?}: {e}");
        assert!(
            e.to_string().contains("allow_host_namespace"),
            "{req:?}: {e}"
        );
    }
    assert!(svc.endpoints(None).unwrap().is_empty());
    let mut config = env.config();
    config.allow_host_namespace = true;
    let store = Store::open(&config.state_dir.join("other"), false).unwrap();
    let allowed = Service::new(FakeKernel::new(&env.netns_dir), store, config).unwrap();
    allowed.reconcile().await.unwrap();
    allowed.create_network(net("n")).await.unwrap();
    assert!(allowed.attach("n", own[1].clone()).await.unwrap().created);
}

#[tokio::test]
async fn bridge_names_in_the_link_prefix_are_refused() {
    let env = Env::new("prefix");
    let svc = env.service().await;
    let bridge = format!("{}9", svc.link_prefix());
    let e = svc
        .create_network(CreateNetwork {
            bridge: Some(bridge.clone()),
            ..net("n")
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), "invalid_argument");
    assert!(e.to_string().contains(&bridge), "{e}");
    assert!(svc.networks().is_empty());
}

/// Three endpoints (one with IPv6), then the journal is damaged as `how`
/// says; a restart (reconcile on the same kernel) must adopt them all.
async fn journal_damage_is_survived(tag: &str, how: fn(&str) -> String) {
    let env = Env::new(tag);
    let svc = env.service().await;
    svc.create_network(CreateNetwork {
        ipv6_subnet: Some("fd00:89::/64".into()),
        ..net("n")
    })
    .await
    .unwrap();
    let mut before = Vec::new();
    for name in ["a", "b", "c"] {
        env.ns(name);
        before.push(
            svc.attach("n", attach_ns(name))
                .await
                .unwrap()
                .endpoint
                .endpoint,
        );
    }
    let text = std::fs::read_to_string(journal(&env)).unwrap();
    std::fs::write(journal(&env), how(&text)).unwrap();
    let report = svc.reconcile().await.unwrap();
    assert!(report.endpoints_removed.is_empty(), "{report:?}");
    assert!(report.orphan_links_removed.is_empty(), "{report:?}");
    for ep in &before {
        assert!(svc.kernel().links().contains_key(&ep.host_ifname));
        let now = svc.endpoint(&ep.id).unwrap().endpoint;
        assert_eq!(
            (&now.target, now.netns_id, &now.ifname, now.ipv4, now.ipv6),
            (&ep.target, ep.netns_id, &ep.ifname, ep.ipv4, ep.ipv6),
            "{}",
            ep.id
        );
        assert_eq!((&now.mac, now.default_route), (&ep.mac, ep.default_route));
    }
    let ids: Vec<String> = before.iter().map(|e| e.id.clone()).collect();
    assert_eq!(journaled(&env), ids);
    // New attaches get new ids and addresses.
    env.ns("d");
    let d = svc
        .attach("n", attach_ns("d"))
        .await
        .unwrap()
        .endpoint
        .endpoint;
    assert!(!ids.contains(&d.id));
    assert!(before.iter().all(|e| e.ipv4 != d.ipv4));
    // And the adopted ones detach as any other.
    assert!(svc.detach_id(&ids[0], true).await.unwrap().detached);
    assert!(!svc.kernel().links().contains_key(&ids[0]));
}

#[tokio::test]
async fn a_deleted_journal_does_not_delete_live_endpoints() {
    journal_damage_is_survived("journal-deleted", |_| String::new()).await;
}

#[tokio::test]
async fn a_truncated_journal_does_not_delete_live_endpoints() {
    journal_damage_is_survived("journal-truncated", |text| {
        text.lines().next().unwrap().to_string() + "\n"
    })
    .await;
}

#[tokio::test]
async fn a_damaged_journal_line_does_not_delete_a_live_endpoint() {
    journal_damage_is_survived("journal-damaged", |text| {
        let lines: Vec<&str> = text.lines().collect();
        format!("{}\n{{\"put\":{{\"id\":garbage\n{}\n", lines[0], lines[2])
    })
    .await;
}

#[tokio::test]
async fn unknown_links_are_deleted_only_when_their_peer_is_gone() {
    let env = Env::new("strays");
    let svc = env.service().await;
    svc.create_network(net("n")).await.unwrap();
    let prefix = svc.link_prefix();
    let peer = |ns| FakePeer {
        ns,
        ifname: "eth0".into(),
        mac: [0x0a, 0x58, 10, 89, 0, 9],
        addresses: vec!["10.89.0.9/24".parse().unwrap()],
        gateways: vec![],
    };
    // A peer in a namespace that is alive but visible nowhere.
    let hidden = format!("{prefix}70");
    svc.kernel().put_link(
        &hidden,
        FakeLink {
            master: Some("cn-n".into()),
            peer: Some(peer(crate::model::NsId { dev: 1, ino: 2 })),
            ..FakeLink::default()
        },
    );
    // A peer whose address is in no network (its network record is gone).
    env.ns("elsewhere");
    let (_, id) = svc
        .kernel()
        .open(&Target::Netns("elsewhere".into()))
        .await
        .unwrap();
    let homeless = format!("{prefix}71");
    let mut p = peer(id);
    p.addresses = vec!["172.31.0.9/24".parse().unwrap()];
    svc.kernel().put_link(
        &homeless,
        FakeLink {
            peer: Some(p),
            ..FakeLink::default()
        },
    );
    // No peer at all.
    let dead = format!("{prefix}72");
    svc.kernel().add_link(&dead);
    let report = svc.reconcile().await.unwrap();
    assert_eq!(report.orphan_links_removed, vec![dead.clone()]);
    let mut left = report.links_left_alone.clone();
    left.sort();
    assert_eq!(left, vec![hidden.clone(), homeless.clone()]);
    let links = svc.kernel().links();
    assert!(links.contains_key(&hidden) && links.contains_key(&homeless));
    assert!(!links.contains_key(&dead));
}

#[tokio::test]
async fn a_bridge_of_ours_whose_record_is_lost_is_adopted_with_its_endpoints() {
    let env = Env::new("bridge-adopt");
    let svc = env.service().await;
    let created = svc.create_network(net("web")).await.unwrap().network;
    env.ns("a");
    let ep = svc
        .attach("web", attach_ns("a"))
        .await
        .unwrap()
        .endpoint
        .endpoint;
    // Both records go: the network's file and the journal.
    std::fs::remove_file(env.dir.join("state/networks/web.json")).unwrap();
    std::fs::remove_file(journal(&env)).unwrap();
    let report = svc.reconcile().await.unwrap();
    assert_eq!(report.networks_adopted, vec!["web".to_string()]);
    assert_eq!(report.endpoints_adopted, vec![ep.id.clone()]);
    let adopted = svc.network("web").unwrap().network;
    assert_eq!(
        (adopted.subnet, adopted.gateway, &adopted.bridge),
        (created.subnet, created.gateway, &created.bridge)
    );
    assert!(env.dir.join("state/networks/web.json").exists());
    assert!(svc.status().unmanaged_bridges.is_empty());
}

#[tokio::test]
async fn network_create_adopts_a_bridge_of_ours_and_refuses_a_foreign_one() {
    let env = Env::new("create-adopt");
    let svc = env.service().await;
    // A long name: its bridge name is hashed, so only `create` can name it.
    let name = "a-rather-long-network-name";
    let created = svc.create_network(net(name)).await.unwrap().network;
    std::fs::remove_file(env.dir.join(format!("state/networks/{name}.json"))).unwrap();
    // Someone else's bridge in our prefix.
    svc.kernel().put_link(
        "cn-foreign",
        FakeLink {
            bridge: true,
            mac: Some([0x02, 0, 0, 0, 0, 1]),
            addresses: vec!["172.20.0.1/24".parse().unwrap()],
            ..FakeLink::default()
        },
    );
    svc.reconcile().await.unwrap();
    let unmanaged = svc.status().unmanaged_bridges;
    assert_eq!(unmanaged.len(), 2, "{unmanaged:?}");
    let ours = unmanaged
        .iter()
        .find(|b| b.bridge == created.bridge)
        .unwrap();
    assert!(ours.ours && ours.fix.contains("network create"), "{ours:?}");
    let foreign = unmanaged.iter().find(|b| b.bridge == "cn-foreign").unwrap();
    assert!(!foreign.ours && foreign.fix.contains("ip link del cn-foreign"));
    // A request that disagrees with the bridge is refused, naming both.
    let e = svc
        .create_network(CreateNetwork {
            subnet: Some("10.99.0.0/24".into()),
            ..net(name)
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), "conflict");
    assert!(e.to_string().contains(&created.subnet.to_string()), "{e}");
    let adopted = svc.create_network(net(name)).await.unwrap().network;
    assert_eq!(
        (adopted.subnet, adopted.gateway),
        (created.subnet, created.gateway)
    );
    assert_eq!(svc.status().unmanaged_bridges.len(), 1);
    let e = svc.create_network(net("foreign")).await.unwrap_err();
    assert_eq!(e.code(), "conflict");
    assert!(e.to_string().contains("not made by this daemon"), "{e}");
}
