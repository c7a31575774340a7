//! The plugin's protocol over the in-memory kernel: what Docker sends for
//! `docker network create -d conductor`, `docker run --network`, container
//! exit and `docker network rm`, and malformed or unknown requests.

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::{Plugin, PluginState};
use crate::kernel::fake::FakeKernel;
use crate::kernel::Kernel;
use crate::service::tests::Env;
use crate::service::Service;

const NET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const EP: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

async fn call(plugin: &Arc<Plugin<FakeKernel>>, path: &str, body: &str) -> (u16, Value) {
    let req = Request::post(path)
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = plugin.router().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

async fn setup(tag: &str) -> (Env, Arc<Service<FakeKernel>>, Arc<Plugin<FakeKernel>>) {
    let env = Env::new(tag);
    let svc = Arc::new(env.service().await);
    let plugin = Plugin::open(svc.clone()).await.unwrap();
    (env, svc, plugin)
}

fn create_network_body(pool: &str, gateway: &str) -> String {
    json!({
        "NetworkID": NET,
        "Options": { "com.docker.network.generic": {} },
        "IPv4Data": [{ "AddressSpace": "LocalDefault", "Pool": pool, "Gateway": gateway }],
        "IPv6Data": []
    })
    .to_string()
}

#[tokio::test]
async fn a_docker_network_is_a_conductor_network_and_a_join_hands_docker_a_veth() {
    let (_env, svc, plugin) = setup("plugin-life").await;
    let (s, v) = call(&plugin, "/Plugin.Activate", "{}").await;
    assert_eq!(
        (s, v["Implements"].clone()),
        (200, json!(["NetworkDriver", "IpamDriver"]))
    );
    let (s, v) = call(
        &plugin,
        "/NetworkDriver.CreateNetwork",
        &create_network_body("10.40.0.0/24", "10.40.0.1/24"),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let net = svc.network("docker-0123456789ab").unwrap().network;
    assert_eq!(net.subnet.to_string(), "10.40.0.0/24");
    let ep = json!({ "NetworkID": NET, "EndpointID": EP,
        "Interface": { "Address": "10.40.0.7/24" } })
    .to_string();
    let (s, v) = call(&plugin, "/NetworkDriver.CreateEndpoint", &ep).await;
    assert_eq!(
        (s, v["Interface"]["MacAddress"].clone()),
        (200, json!("0a:58:0a:28:00:07"))
    );
    let join =
        json!({ "NetworkID": NET, "EndpointID": EP, "SandboxKey": "/var/run/docker/netns/x" })
            .to_string();
    let (s, v) = call(&plugin, "/NetworkDriver.Join", &join).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["InterfaceName"]["SrcName"], "cqfedcba9876");
    assert_eq!(v["Gateway"], "10.40.0.1");
    assert!(svc.kernel().link_exists("cpfedcba9876").unwrap());
    // Remembered across a restart of netd.
    let again = Plugin::open(svc.clone()).await.unwrap();
    let leave = json!({ "NetworkID": NET, "EndpointID": EP }).to_string();
    assert_eq!(call(&again, "/NetworkDriver.Leave", &leave).await.0, 200);
    assert!(!svc.kernel().link_exists("cpfedcba9876").unwrap());
    assert_eq!(
        call(&again, "/NetworkDriver.DeleteEndpoint", &leave)
            .await
            .0,
        200
    );
    let del = json!({ "NetworkID": NET }).to_string();
    assert_eq!(
        call(&again, "/NetworkDriver.DeleteNetwork", &del).await.0,
        200
    );
    assert!(svc.network("docker-0123456789ab").is_err());
    assert_eq!(*again.state.lock().await, PluginState::default());
}

#[tokio::test]
async fn bad_requests_are_refused_by_value_and_change_nothing() {
    let (_env, svc, plugin) = setup("plugin-bad").await;
    let cases: [(&str, String, u16, &str); 6] = [
        (
            "/NetworkDriver.CreateNetwork",
            "{\"NetworkID\": ".into(),
            400,
            "CreateNetwork",
        ),
        (
            "/NetworkDriver.CreateNetwork",
            create_network_body("224.0.0.0/24", ""),
            400,
            "224.0.0.0/24",
        ),
        (
            "/NetworkDriver.CreateNetwork",
            json!({"NetworkID": "../x", "IPv4Data": []}).to_string(),
            400,
            "../x",
        ),
        (
            "/NetworkDriver.Join",
            json!({"NetworkID": NET, "EndpointID": EP}).to_string(),
            404,
            EP,
        ),
        (
            "/IpamDriver.RequestPool",
            json!({"Pool": "10.1.0.0/16", "V6": true}).to_string(),
            400,
            "IPv6",
        ),
        (
            "/NetworkDriver.Nonsense",
            "{}".into(),
            404,
            "/NetworkDriver.Nonsense",
        ),
    ];
    for (path, body, status, named) in cases {
        let (s, v) = call(&plugin, path, &body).await;
        let err = v["Err"].as_str().unwrap_or_default().to_string();
        assert_eq!(s, status, "{path} {body}: {err}");
        assert!(
            err.contains(named),
            "{path}: {err:?} does not name {named:?}"
        );
    }
    assert!(svc.networks().is_empty());
    assert_eq!(*plugin.state.lock().await, PluginState::default());
}

#[tokio::test]
async fn the_ipam_driver_hands_out_a_pool_its_gateway_and_addresses() {
    let (_env, _svc, plugin) = setup("plugin-ipam").await;
    let (s, v) = call(
        &plugin,
        "/IpamDriver.RequestPool",
        "{\"AddressSpace\":\"conductor-local\"}",
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let pool = v["PoolID"].as_str().unwrap().to_string();
    let gw = json!({ "PoolID": pool, "Options": { "RequestAddressType": "com.docker.network.gateway" } });
    let (_, g) = call(&plugin, "/IpamDriver.RequestAddress", &gw.to_string()).await;
    let (_, a) = call(
        &plugin,
        "/IpamDriver.RequestAddress",
        &json!({ "PoolID": pool }).to_string(),
    )
    .await;
    let prefix = pool.rsplit_once('.').unwrap().0.to_string();
    assert_eq!(g["Address"], format!("{prefix}.1/24"));
    assert_eq!(a["Address"], format!("{prefix}.2/24"));
    let rel = json!({ "PoolID": pool, "Address": format!("{prefix}.2/24") }).to_string();
    assert_eq!(
        call(&plugin, "/IpamDriver.ReleaseAddress", &rel).await.0,
        200
    );
    let rel = json!({ "PoolID": pool }).to_string();
    assert_eq!(call(&plugin, "/IpamDriver.ReleasePool", &rel).await.0, 200);
    assert_eq!(*plugin.state.lock().await, PluginState::default());
}
