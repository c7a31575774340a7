//! Service tests over the in-memory kernel: no privileges needed.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::*;
use crate::api::types::{AttachRequest, CreateNetwork};
use crate::kernel::fake::FakeKernel;
use crate::model::Target;

pub(crate) struct Env {
    pub dir: PathBuf,
    pub netns_dir: PathBuf,
}

impl Env {
    pub fn new(tag: &str) -> Env {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "conductor-netd-svc-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let netns_dir = dir.join("netns");
        std::fs::create_dir_all(&netns_dir).unwrap();
        Env { dir, netns_dir }
    }

    pub fn config(&self) -> Config {
        Config {
            state_dir: self.dir.join("state"),
            socket: self.dir.join("sock"),
            fsync: false,
            ..Config::default()
        }
    }

    pub fn ns(&self, name: &str) {
        std::fs::write(self.netns_dir.join(name), b"").unwrap();
    }

    pub fn rm_ns(&self, name: &str) {
        std::fs::remove_file(self.netns_dir.join(name)).unwrap();
    }

    pub async fn service(&self) -> Service<FakeKernel> {
        self.service_with(FakeKernel::new(&self.netns_dir)).await
    }

    pub async fn service_with(&self, kernel: FakeKernel) -> Service<FakeKernel> {
        let config = self.config();
        let store = Store::open(&config.state_dir, false).unwrap();
        let svc = Service::new(kernel, store, config).unwrap();
        svc.reconcile().await.unwrap();
        svc
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

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

fn netns_target(name: &str) -> Target {
    Target::Netns(name.into())
}

#[tokio::test]
async fn network_lifecycle_and_automatic_subnets() {
    let env = Env::new("lifecycle");
    let svc = env.service().await;
    svc.kernel().add_route("10.89.0.0/24".parse().unwrap());
    let a = svc.create_network(net("a")).await.unwrap();
    assert_eq!(a.network.subnet.to_string(), "10.89.1.0/24");
    assert_eq!(a.network.gateway.to_string(), "10.89.1.1");
    assert_eq!(a.network.bridge, "cn-a");
    let b = svc.create_network(net("b")).await.unwrap();
    assert_eq!(b.network.subnet.to_string(), "10.89.2.0/24");
    assert_eq!(svc.networks().len(), 2);
    assert!(svc.kernel().links().contains_key("cn-a"));
    svc.remove_network("a", false).await.unwrap();
    assert!(!svc.kernel().links().contains_key("cn-a"));
    assert_eq!(svc.network("a").unwrap_err().code(), "not_found");
    assert_eq!(
        svc.remove_network("a", false).await.unwrap_err().code(),
        "not_found"
    );
}

#[tokio::test]
async fn bad_network_inputs_change_nothing() {
    let env = Env::new("badnet");
    let svc = env.service().await;
    let mut ok = net("x");
    ok.subnet = Some("10.50.0.0/16".into());
    svc.create_network(ok).await.unwrap();
    let cases: Vec<(CreateNetwork, &str, &str)> = vec![
        (
            CreateNetwork {
                subnet: Some("10.50.3.0/24".into()),
                ..net("y")
            },
            "conflict",
            "overlaps network \"x\"",
        ),
        (
            CreateNetwork {
                subnet: Some("10.60.0.1/24".into()),
                ..net("y")
            },
            "invalid_argument",
            "10.60.0.1/24",
        ),
        (
            CreateNetwork {
                subnet: Some("10.60.0.0/24".into()),
                gateway: Some("10.61.0.1".into()),
                ..net("y")
            },
            "invalid_argument",
            "10.61.0.1",
        ),
        (net(&"n".repeat(65)), "invalid_argument", "longer than 64"),
        (net("bad name"), "invalid_argument", "bad name"),
        (net("x"), "conflict", "already exists"),
        (
            CreateNetwork {
                mtu: Some(10),
                ..net("y")
            },
            "invalid_argument",
            "10",
        ),
        (
            CreateNetwork {
                gateway: Some("10.1.1.1".into()),
                ..net("y")
            },
            "invalid_argument",
            "needs an explicit",
        ),
    ];
    for (req, code, text) in cases {
        let e = svc.create_network(req.clone()).await.unwrap_err();
        assert_eq!(e.code(), code, "{req:?}: {e}");
        assert!(e.to_string().contains(text), "{req:?}: {e}");
    }
    assert_eq!(svc.networks().len(), 1);
    assert_eq!(svc.kernel().links().len(), 1);
}

#[tokio::test]
async fn pool_exhaustion() {
    let env = Env::new("exhaust");
    let mut config = env.config();
    config.pool = "10.77.0.0/23".parse().unwrap();
    let store = Store::open(&config.state_dir, false).unwrap();
    let svc = Service::new(FakeKernel::new(&env.netns_dir), store, config).unwrap();
    svc.create_network(net("a")).await.unwrap();
    svc.create_network(net("b")).await.unwrap();
    let e = svc.create_network(net("c")).await.unwrap_err();
    assert_eq!(e.code(), "exhausted");
    assert!(e.to_string().contains("10.77.0.0/23"), "{e}");
}

#[tokio::test]
async fn attach_is_idempotent_and_detach_frees() {
    let env = Env::new("attach");
    let svc = env.service().await;
    svc.create_network(net("n")).await.unwrap();
    env.ns("c1");
    let first = svc.attach("n", attach_ns("c1")).await.unwrap();
    assert!(first.created);
    let ep = &first.endpoint.endpoint;
    assert_eq!(ep.ipv4.to_string(), "10.89.0.2/24");
    assert_eq!(ep.ifname, "eth0");
    let again = svc.attach("n", attach_ns("c1")).await.unwrap();
    assert!(!again.created);
    assert_eq!(again.endpoint, first.endpoint);
    assert_eq!(svc.kernel().calls("create_endpoint"), 1);
    // Same target with another address is a conflict, not a second endpoint.
    let mut other_ip = attach_ns("c1");
    other_ip.ip = Some("10.89.0.9".into());
    assert_eq!(
        svc.attach("n", other_ip).await.unwrap_err().code(),
        "conflict"
    );

    let d = svc.detach("n", &netns_target("c1"), true).await.unwrap();
    assert!(d.detached);
    assert!(!svc.kernel().links().contains_key(&ep.host_ifname));
    let d = svc.detach("n", &netns_target("c1"), true).await.unwrap();
    assert!(!d.detached);
    assert!(svc.endpoints(None).unwrap().is_empty());
}

#[tokio::test]
async fn bad_attach_inputs() {
    let env = Env::new("badattach");
    let svc = env.service().await;
    svc.create_network(net("n")).await.unwrap();
    env.ns("c1");
    env.ns("c2");
    let mut taken = attach_ns("c1");
    taken.ip = Some("10.89.0.5".into());
    svc.attach("n", taken).await.unwrap();
    let cases: Vec<(&str, AttachRequest, &str, &str)> = vec![
        ("nope", attach_ns("c2"), "not_found", "network \"nope\""),
        ("n", attach_ns("ghost"), "not_found", "netns \"ghost\""),
        (
            "n",
            AttachRequest {
                pid: Some(i32::MAX),
                ..Default::default()
            },
            "not_found",
            "pid",
        ),
        (
            "n",
            AttachRequest {
                ip: Some("10.89.0.5".into()),
                ..attach_ns("c2")
            },
            "conflict",
            "10.89.0.5",
        ),
        (
            "n",
            AttachRequest {
                ip: Some("10.90.0.5".into()),
                ..attach_ns("c2")
            },
            "invalid_argument",
            "outside",
        ),
        (
            "n",
            AttachRequest {
                ip: Some("10.89.0.1".into()),
                ..attach_ns("c2")
            },
            "invalid_argument",
            "reserved",
        ),
        (
            "n",
            AttachRequest {
                ifname: Some("way-too-long-ifname".into()),
                ..attach_ns("c2")
            },
            "invalid_argument",
            "way-too-long-ifname",
        ),
        ("n", AttachRequest::default(), "invalid_argument", "one of"),
    ];
    for (network, req, code, text) in cases {
        let e = svc.attach(network, req.clone()).await.unwrap_err();
        assert_eq!(e.code(), code, "{req:?}: {e}");
        assert!(e.to_string().contains(text), "{req:?}: {e}");
    }
    assert_eq!(svc.endpoints(None).unwrap().len(), 1);
}

/// The endpoint ids the state journal holds (the service has the lock).
fn persisted_endpoints(dir: &std::path::Path) -> Vec<String> {
    crate::state::journaled_endpoint_ids(&dir.join("state")).unwrap()
}

#[tokio::test]
async fn failed_attach_rolls_back() {
    let env = Env::new("rollback");
    let svc = env.service().await;
    svc.create_network(net("n")).await.unwrap();
    env.ns("c1");
    svc.kernel().fail("create_endpoint", 1);
    let e = svc.attach("n", attach_ns("c1")).await.unwrap_err();
    assert!(e.to_string().contains("injected"), "{e}");
    assert!(svc.endpoints(None).unwrap().is_empty());
    assert_eq!(svc.kernel().links().len(), 1);
    // Nothing on disk, and the address is free again.
    assert!(persisted_endpoints(&env.dir).is_empty());
    let ok = svc.attach("n", attach_ns("c1")).await.unwrap();
    assert_eq!(ok.endpoint.endpoint.ipv4.addr().to_string(), "10.89.0.3");
}

#[tokio::test]
async fn remove_refuses_with_endpoints_unless_forced() {
    let env = Env::new("force");
    let svc = env.service().await;
    svc.create_network(net("n")).await.unwrap();
    for i in 0..5 {
        env.ns(&format!("c{i}"));
        svc.attach("n", attach_ns(&format!("c{i}"))).await.unwrap();
    }
    let e = svc.remove_network("n", false).await.unwrap_err();
    assert_eq!(e.code(), "conflict");
    assert!(e.to_string().contains("5 endpoint"), "{e}");
    let r = svc.remove_network("n", true).await.unwrap();
    assert_eq!(r.detached, 5);
    assert!(svc.kernel().links().is_empty());
    assert!(svc.endpoints(None).unwrap().is_empty());
}

#[tokio::test]
async fn concurrent_attaches_get_distinct_addresses() {
    let env = Env::new("concurrent");
    let svc = Arc::new(env.service().await);
    svc.create_network(net("n")).await.unwrap();
    for i in 0..200 {
        env.ns(&format!("c{i}"));
    }
    let mut tasks = Vec::new();
    for i in 0..200 {
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            svc.attach("n", attach_ns(&format!("c{i}"))).await
        }));
    }
    let mut seen = HashSet::new();
    for t in tasks {
        let r = t.await.unwrap().unwrap();
        assert!(seen.insert(r.endpoint.endpoint.ipv4.addr()));
    }
    assert_eq!(seen.len(), 200);
    // The same targets again, concurrently: all idempotent.
    let mut tasks = Vec::new();
    for i in 0..200 {
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            svc.attach("n", attach_ns(&format!("c{i}"))).await
        }));
    }
    for t in tasks {
        assert!(!t.await.unwrap().unwrap().created);
    }
    assert_eq!(svc.kernel().calls("create_endpoint"), 200);
}

#[tokio::test]
async fn restart_on_an_empty_kernel_drops_incomplete_endpoints() {
    let env = Env::new("restart");
    {
        let svc = env.service().await;
        svc.create_network(net("n")).await.unwrap();
        for name in ["a", "b", "c"] {
            env.ns(name);
            svc.attach("n", attach_ns(name)).await.unwrap();
        }
    }
    // A fresh fake kernel knows no links (as after a reboot): every
    // endpoint is incomplete and dropped, the bridge recreated.
    let svc = env.service().await;
    assert!(svc.endpoints(None).unwrap().is_empty());
    assert!(svc.kernel().links().contains_key("cn-n"));
    assert_eq!(svc.networks().len(), 1);
    assert!(persisted_endpoints(&env.dir).is_empty());
    env.ns("d");
    let d = svc.attach("n", attach_ns("d")).await.unwrap();
    assert!(d.created);
}

#[tokio::test]
async fn reconcile_keeps_live_endpoints_and_drops_dead_ones() {
    let env = Env::new("reconcile");
    let svc = env.service().await;
    svc.create_network(net("n")).await.unwrap();
    for name in ["a", "b", "c"] {
        env.ns(name);
        svc.attach("n", attach_ns(name)).await.unwrap();
    }
    let ids: Vec<String> = svc
        .endpoints(None)
        .unwrap()
        .into_iter()
        .map(|e| e.endpoint.id)
        .collect();
    // b's namespace disappears; someone deletes the bridge; a stray link
    // of ours appears; a record without a kernel endpoint appears.
    env.rm_ns("b");
    svc.kernel().remove_link("cn-n");
    let stray = format!("{}ff", svc.link_prefix());
    svc.kernel().add_link(&stray);
    svc.kernel().add_link("someone-elses");
    // Reconcile on the same kernel, as a restart would.
    let report = svc.reconcile().await.unwrap();
    assert_eq!(report.bridges_recreated, vec!["cn-n".to_string()]);
    assert_eq!(report.endpoints_kept, 2, "{report:?}");
    assert_eq!(report.endpoints_removed, vec![ids[1].clone()]);
    assert_eq!(report.orphan_links_removed, vec![stray.clone()]);
    let links = svc.kernel().links();
    assert!(links.contains_key("someone-elses"));
    assert!(!links.contains_key(&ids[1]));
    assert_eq!(links[&ids[0]].master.as_deref(), Some("cn-n"));
    // The kept endpoints keep their addresses; the next one is new.
    env.ns("e");
    let e = svc.attach("n", attach_ns("e")).await.unwrap();
    let used: Vec<String> = svc
        .endpoints(None)
        .unwrap()
        .iter()
        .map(|e| e.endpoint.ipv4.addr().to_string())
        .collect();
    let unique: HashSet<&String> = used.iter().collect();
    assert_eq!(unique.len(), used.len());
    assert_ne!(e.endpoint.endpoint.ipv4.addr().to_string(), "10.89.0.2");
}

#[tokio::test]
async fn detach_by_name_after_namespace_is_gone() {
    let env = Env::new("gone");
    let svc = env.service().await;
    svc.create_network(net("n")).await.unwrap();
    env.ns("a");
    svc.attach("n", attach_ns("a")).await.unwrap();
    env.rm_ns("a");
    assert!(
        svc.detach("n", &netns_target("a"), true)
            .await
            .unwrap()
            .detached
    );
    assert_eq!(
        svc.detach("n", &netns_target("a"), true)
            .await
            .unwrap_err()
            .code(),
        "not_found"
    );
}

#[tokio::test]
async fn detach_without_waiting_finishes_in_the_background() {
    let env = Env::new("nowait");
    let svc = Arc::new(env.service().await);
    svc.start_reaper();
    svc.create_network(net("n")).await.unwrap();
    env.ns("a");
    let first = svc.attach("n", attach_ns("a")).await.unwrap();
    let id = first.endpoint.endpoint.id.clone();
    let r = svc.detach("n", &netns_target("a"), false).await.unwrap();
    assert!(r.detached && r.pending);
    // A new attach of the same namespace waits for the old one to go.
    let again = svc.attach("n", attach_ns("a")).await.unwrap();
    assert!(again.created);
    assert_ne!(again.endpoint.endpoint.id, id);
    assert!(!svc.kernel().links().contains_key(&id));
    assert!(!persisted_endpoints(&env.dir).contains(&id));
}

#[tokio::test]
async fn a_detach_tombstone_is_finished_at_restart() {
    let env = Env::new("tombstone");
    let svc = env.service().await;
    svc.create_network(net("n")).await.unwrap();
    env.ns("a");
    let ep = svc
        .attach("n", attach_ns("a"))
        .await
        .unwrap()
        .endpoint
        .endpoint;
    // As if the daemon died right after recording a detach that did not wait.
    let mut tomb = ep.clone();
    tomb.detaching = true;
    svc.store.save_endpoint(&tomb).unwrap();
    let report = svc.reconcile().await.unwrap();
    assert_eq!(report.endpoints_removed, vec![ep.id.clone()]);
    assert!(!svc.kernel().links().contains_key(&ep.id));
}
