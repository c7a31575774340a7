//! Docker's network plugin: netd serves the remote network-driver and IPAM
//! protocols on a unix socket (`/run/docker/plugins/conductor.sock` when
//! enabled), so `docker network create -d conductor [--ipam-driver
//! conductor]` makes a conductor network and `docker run --network` puts
//! containers on it, backed by the same networks, IPAM and endpoints as the
//! API (and so the same DNS, egress and policy). State: [`state`]; the
//! protocol's types: [`protocol`]; handlers: [`driver`] and [`ipam`].

mod driver;
mod ipam;
mod protocol;
mod state;

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use ipnet::{IpNet, Ipv4Net};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tokio::sync::Mutex;

use crate::error::{Error, Result};
use crate::kernel::Kernel;
use crate::service::Service;

pub use ipam::{AutoPool, Taken};
pub use protocol::MEDIA_TYPE;
pub use state::PluginState;

/// Where Docker looks for a plugin named `conductor`.
pub const DEFAULT_SOCKET: &str = "/run/docker/plugins/conductor.sock";
/// The driver's (and the IPAM driver's) name in Docker.
pub const DRIVER_NAME: &str = "conductor";

pub struct Plugin<K: Kernel> {
    svc: Arc<Service<K>>,
    state: Mutex<PluginState>,
    path: PathBuf,
}

impl<K: Kernel> Plugin<K> {
    /// The plugin with its saved state (in the daemon's state directory).
    pub async fn open(svc: Arc<Service<K>>) -> Result<Arc<Plugin<K>>> {
        let path = PluginState::path(&svc.config().state_dir);
        let state = PluginState::load(&path).await?;
        Ok(Arc::new(Plugin {
            svc,
            state: Mutex::new(state),
            path,
        }))
    }

    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/Plugin.Activate", post(activate))
            .route("/NetworkDriver.GetCapabilities", post(capabilities))
            .route("/NetworkDriver.CreateNetwork", post(create_network::<K>))
            .route("/NetworkDriver.DeleteNetwork", post(delete_network::<K>))
            .route("/NetworkDriver.CreateEndpoint", post(create_endpoint::<K>))
            .route("/NetworkDriver.EndpointOperInfo", post(oper_info))
            .route("/NetworkDriver.DeleteEndpoint", post(delete_endpoint::<K>))
            .route("/NetworkDriver.Join", post(join::<K>))
            .route("/NetworkDriver.Leave", post(leave::<K>))
            .route("/NetworkDriver.DiscoverNew", post(empty))
            .route("/NetworkDriver.DiscoverDelete", post(empty))
            .route("/NetworkDriver.ProgramExternalConnectivity", post(empty))
            .route("/NetworkDriver.RevokeExternalConnectivity", post(empty))
            .route("/IpamDriver.GetCapabilities", post(ipam_capabilities))
            .route("/IpamDriver.GetDefaultAddressSpaces", post(address_spaces))
            .route("/IpamDriver.RequestPool", post(request_pool::<K>))
            .route("/IpamDriver.ReleasePool", post(release_pool::<K>))
            .route("/IpamDriver.RequestAddress", post(request_address::<K>))
            .route("/IpamDriver.ReleaseAddress", post(release_address::<K>))
            .fallback(unknown)
            .layer(axum::middleware::from_fn(log_call))
            .with_state(self.clone())
    }

    /// What a new pool must not overlap: netd's networks and the routes of
    /// the sandbox (a route dump: asked on `network create` only).
    async fn taken_subnets(&self) -> Taken {
        let mut subnets = self.svc.kernel().used_networks().await.unwrap_or_default();
        subnets.extend(
            self.svc
                .networks()
                .iter()
                .map(|v| IpNet::V4(v.network.subnet)),
        );
        Taken {
            subnets,
            addresses: Vec::new(),
        }
    }

    /// What a new address in `subnet` must not be: the gateway and the
    /// endpoints of netd's network on it (asked on every container start,
    /// so no kernel round trip).
    fn taken_addresses(&self, subnet: Option<Ipv4Net>) -> Taken {
        let mut addresses = Vec::new();
        for view in self.svc.networks() {
            let net = &view.network;
            if Some(net.subnet) == subnet {
                addresses.push(net.gateway);
                let held = self.svc.endpoints(Some(&net.name)).unwrap_or_default();
                addresses.extend(held.iter().map(|e| e.endpoint.ipv4.addr()));
            }
        }
        Taken {
            subnets: Vec::new(),
            addresses,
        }
    }

    fn auto_pool(&self) -> AutoPool {
        AutoPool {
            pool: self.svc.config().pool,
            prefix: self.svc.config().pool_prefix,
        }
    }
}

async fn log_call(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let call = req.uri().path().to_string();
    let started = std::time::Instant::now();
    let answer = next.run(req).await;
    tracing::debug!(%call, status = answer.status().as_u16(), ms = started.elapsed().as_millis() as u64, "docker plugin call");
    answer
}

/// An answer: 200 with the body, or a 4xx/5xx with `{"Err": ...}` (Docker
/// reads `Err` either way).
fn reply(result: Result<Value>) -> Response {
    let (status, body) = match result {
        Ok(v) => (StatusCode::OK, v),
        Err(e) => {
            let status =
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            tracing::warn!(error = %e, "docker plugin request refused");
            (status, json!({ "Err": e.to_string() }))
        }
    };
    (
        status,
        [(header::CONTENT_TYPE, MEDIA_TYPE)],
        body.to_string(),
    )
        .into_response()
}

fn parse<T: DeserializeOwned>(call: &'static str, body: &Bytes) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| {
        let shown: String = String::from_utf8_lossy(body).chars().take(80).collect();
        Error::invalid(call, shown, format!("not a valid request: {e}"))
    })
}

async fn activate() -> Response {
    reply(Ok(json!({ "Implements": ["NetworkDriver", "IpamDriver"] })))
}

async fn capabilities() -> Response {
    reply(Ok(
        json!({ "Scope": "local", "ConnectivityScope": "local" }),
    ))
}

async fn oper_info() -> Response {
    reply(Ok(json!({ "Value": {} })))
}

async fn empty() -> Response {
    reply(Ok(json!({})))
}

async fn unknown(uri: Uri) -> Response {
    reply(Err(Error::NotFound {
        what: "plugin call",
        name: uri.path().to_string(),
    }))
}

async fn ipam_capabilities() -> Response {
    reply(Ok(json!({ "RequiresMACAddress": false })))
}

async fn address_spaces() -> Response {
    reply(Ok(json!({
        "LocalDefaultAddressSpace": "conductor-local",
        "GlobalDefaultAddressSpace": "conductor-global"
    })))
}

type Shared<K> = State<Arc<Plugin<K>>>;

/// A network-driver call: parse the body, run the handler of the same name.
macro_rules! driver_call {
    ($name:ident, $call:literal) => {
        async fn $name<K: Kernel>(State(p): Shared<K>, body: Bytes) -> Response {
            let run = async { p.$name(parse($call, &body)?).await };
            reply(run.await)
        }
    };
}

driver_call!(create_network, "CreateNetwork");
driver_call!(delete_network, "DeleteNetwork");
driver_call!(create_endpoint, "CreateEndpoint");
driver_call!(delete_endpoint, "DeleteEndpoint");
driver_call!(join, "Join");
driver_call!(leave, "Leave");

async fn request_pool<K: Kernel>(State(p): Shared<K>, body: Bytes) -> Response {
    let run = async {
        let req: protocol::RequestPoolRequest = parse("RequestPool", &body)?;
        if req.v6 {
            return Err(Error::invalid(
                "IPv6 pool",
                &req.pool,
                "the conductor IPAM driver hands out IPv4 pools only",
            ));
        }
        if !req.sub_pool.is_empty() {
            return Err(Error::invalid(
                "sub-pool (--ip-range)",
                &req.sub_pool,
                "the conductor IPAM driver does not take one",
            ));
        }
        let adopted = match req
            .options
            .as_ref()
            .and_then(|o| o.get(protocol::NETWORK_OPTION))
        {
            Some(name) => Some(p.svc.network(name)?.network.subnet),
            None => None,
        };
        let taken = p.taken_subnets().await;
        let mut state = p.state.lock().await;
        let before = state.clone();
        let subnet = state.request_pool(&req.pool, adopted, &taken, p.auto_pool())?;
        if let Err(e) = state.save(&p.path).await {
            *state = before;
            return Err(e);
        }
        Ok(json!({ "PoolID": subnet.to_string(), "Pool": subnet.to_string(), "Data": {} }))
    };
    reply(run.await)
}

async fn release_pool<K: Kernel>(State(p): Shared<K>, body: Bytes) -> Response {
    let run = async {
        let req: protocol::ReleasePoolRequest = parse("ReleasePool", &body)?;
        let mut state = p.state.lock().await;
        if state.release_pool(&req.pool_id) {
            state.save(&p.path).await?;
        }
        Ok(json!({}))
    };
    reply(run.await)
}

async fn request_address<K: Kernel>(State(p): Shared<K>, body: Bytes) -> Response {
    let run = async {
        let req: protocol::RequestAddressRequest = parse("RequestAddress", &body)?;
        let gateway = req
            .options
            .as_ref()
            .and_then(|o| o.get(protocol::ADDRESS_TYPE_OPTION))
            .is_some_and(|t| t == protocol::GATEWAY_ADDRESS_TYPE);
        let subnet = req.pool_id.parse::<Ipv4Net>().ok();
        let taken = p.taken_addresses(subnet);
        let mut state = p.state.lock().await;
        let before = state.clone();
        let address = state.request_address(&req.pool_id, &req.address, gateway, &taken)?;
        if let Err(e) = state.save(&p.path).await {
            *state = before;
            return Err(e);
        }
        Ok(json!({ "Address": address.to_string(), "Data": {} }))
    };
    reply(run.await)
}

async fn release_address<K: Kernel>(State(p): Shared<K>, body: Bytes) -> Response {
    let run = async {
        let req: protocol::ReleaseAddressRequest = parse("ReleaseAddress", &body)?;
        let mut state = p.state.lock().await;
        if state.release_address(&req.pool_id, &req.address)? {
            state.save(&p.path).await?;
        }
        Ok(json!({}))
    };
    reply(run.await)
}

#[cfg(test)]
mod tests;
