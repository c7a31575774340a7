//! The API's client over its unix socket: one typed method per route (built
//! from `routes`), used by the CLI, `demo` and `bench-api`.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::UnixStream;

use super::error::{ClientError, ErrorBody};
use super::routes::{self, Route};
use super::types::{
    AttachRequest, AttachResponse, CreateNetwork, DetachRequest, DetachResponse,
    DockerEngineRequest, DockerEngineView, EndpointView, NetworkView, PolicyRules, PolicyView,
    PortRequest, RemoveResponse, SetPolicy, Status,
};
use crate::ports::PortView;

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

/// A raw answer: status and body bytes.
#[derive(Debug, Clone)]
pub struct RawReply {
    pub status: u16,
    pub body: Bytes,
}

impl Client {
    pub fn new(socket: impl Into<PathBuf>) -> Client {
        Client {
            socket: socket.into(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub async fn status(&self) -> Result<Status> {
        self.call(&routes::STATUS, &[], None::<&()>).await
    }

    /// The daemon's start-up probe (`doctor`'s report), as JSON.
    pub async fn doctor(&self) -> Result<serde_json::Value> {
        self.call(&routes::DOCTOR, &[], None::<&()>).await
    }

    pub async fn networks(&self) -> Result<Vec<NetworkView>> {
        self.call(&routes::LIST_NETWORKS, &[], None::<&()>).await
    }

    pub async fn create_network(&self, req: &CreateNetwork) -> Result<NetworkView> {
        self.call(&routes::CREATE_NETWORK, &[], Some(req)).await
    }

    pub async fn network(&self, name: &str) -> Result<NetworkView> {
        self.call(&routes::GET_NETWORK, &[name], None::<&()>).await
    }

    pub async fn remove_network(&self, name: &str, force: bool) -> Result<RemoveResponse> {
        let query: &[(&str, &str)] = if force { &[("force", "true")] } else { &[] };
        let url = routes::REMOVE_NETWORK.url_with_query(&[name], query);
        self.send(routes::REMOVE_NETWORK.method, &url, None::<&()>)
            .await
    }

    pub async fn network_endpoints(&self, name: &str) -> Result<Vec<EndpointView>> {
        self.call(&routes::NETWORK_ENDPOINTS, &[name], None::<&()>)
            .await
    }

    pub async fn attach(&self, network: &str, req: &AttachRequest) -> Result<AttachResponse> {
        self.call(&routes::ATTACH, &[network], Some(req)).await
    }

    pub async fn detach(&self, network: &str, req: &DetachRequest) -> Result<DetachResponse> {
        self.call(&routes::DETACH, &[network], Some(req)).await
    }

    pub async fn endpoints(&self) -> Result<Vec<EndpointView>> {
        self.call(&routes::LIST_ENDPOINTS, &[], None::<&()>).await
    }

    pub async fn endpoint(&self, id: &str) -> Result<EndpointView> {
        self.call(&routes::GET_ENDPOINT, &[id], None::<&()>).await
    }

    pub async fn detach_endpoint(&self, id: &str, wait: bool) -> Result<DetachResponse> {
        let query: &[(&str, &str)] = if wait { &[] } else { &[("nowait", "true")] };
        let url = routes::DETACH_ENDPOINT.url_with_query(&[id], query);
        self.send(routes::DETACH_ENDPOINT.method, &url, None::<&()>)
            .await
    }

    pub async fn labelled_containers(&self) -> Result<Vec<crate::api::types::LabelledContainer>> {
        self.call(&routes::LIST_LABELLED, &[], None::<&()>).await
    }

    pub async fn docker_engines(&self) -> Result<Vec<DockerEngineView>> {
        self.call(&routes::LIST_DOCKER, &[], None::<&()>).await
    }

    pub async fn register_docker(&self, req: &DockerEngineRequest) -> Result<DockerEngineView> {
        self.call(&routes::REGISTER_DOCKER, &[], Some(req)).await
    }

    pub async fn docker_engine(&self, name: &str) -> Result<DockerEngineView> {
        self.call(&routes::GET_DOCKER, &[name], None::<&()>).await
    }

    pub async fn unregister_docker(&self, name: &str) -> Result<DockerEngineView> {
        self.call(&routes::UNREGISTER_DOCKER, &[name], None::<&()>)
            .await
    }

    // Egress policies.

    pub async fn policies(&self) -> Result<Vec<PolicyView>> {
        self.call(&routes::LIST_POLICIES, &[], None::<&()>).await
    }

    pub async fn policy(&self, network: &str) -> Result<PolicyView> {
        self.call(&routes::GET_POLICY, &[network], None::<&()>)
            .await
    }

    pub async fn set_policy(&self, network: &str, spec: &SetPolicy) -> Result<PolicyView> {
        self.call(&routes::SET_POLICY, &[network], Some(spec)).await
    }

    pub async fn reset_policy(&self, network: &str) -> Result<PolicyView> {
        self.call(&routes::RESET_POLICY, &[network], None::<&()>)
            .await
    }

    pub async fn add_policy_rules(&self, network: &str, rules: &[String]) -> Result<PolicyView> {
        let body = PolicyRules {
            rules: rules.to_vec(),
        };
        self.call(&routes::ADD_POLICY_RULES, &[network], Some(&body))
            .await
    }

    pub async fn remove_policy_rules(&self, network: &str, rules: &[String]) -> Result<PolicyView> {
        let body = PolicyRules {
            rules: rules.to_vec(),
        };
        self.call(&routes::REMOVE_POLICY_RULES, &[network], Some(&body))
            .await
    }

    // Published ports.

    pub async fn ports(&self) -> Result<Vec<PortView>> {
        self.call(&routes::LIST_PORTS, &[], None::<&()>).await
    }

    pub async fn add_port(&self, req: &PortRequest) -> Result<PortView> {
        self.call(&routes::ADD_PORT, &[], Some(req)).await
    }

    /// `id`: `HOST_ADDR:HOST_PORT/PROTO` as listed.
    pub async fn remove_port(&self, id: &str) -> Result<PortView> {
        self.call(&routes::REMOVE_PORT, &[id], None::<&()>).await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        route: &Route,
        params: &[&str],
        body: Option<&impl Serialize>,
    ) -> Result<T> {
        self.send(route.method, &route.url(params), body).await
    }

    /// Send a request with an optional JSON body; decode a JSON answer or
    /// turn an error answer into `ClientError::Api`.
    async fn send<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T> {
        let bytes = match body {
            Some(b) => Some(
                serde_json::to_vec(b)
                    .map_err(|e| ClientError::Decode(format!("encode request: {e}")))?,
            ),
            None => None,
        };
        let reply = self.raw(method, path, bytes).await?;
        if reply.status >= 400 {
            return Err(match serde_json::from_slice::<ErrorBody>(&reply.body) {
                Ok(e) => ClientError::Api {
                    status: reply.status,
                    code: e.error.code,
                    message: e.error.message,
                },
                Err(_) => ClientError::Api {
                    status: reply.status,
                    code: "unknown".into(),
                    message: String::from_utf8_lossy(&reply.body).into_owned(),
                },
            });
        }
        serde_json::from_slice(&reply.body).map_err(|e| {
            ClientError::Decode(format!(
                "{method} {path}: unexpected answer ({e}): {}",
                String::from_utf8_lossy(&reply.body)
            ))
        })
    }

    async fn connect(&self) -> Result<UnixStream> {
        UnixStream::connect(&self.socket).await.map_err(|e| {
            let why = match e.kind() {
                std::io::ErrorKind::NotFound => {
                    "no socket there (is the daemon running? use --socket or CONDUCTOR_NETD_SOCKET)"
                        .to_string()
                }
                std::io::ErrorKind::ConnectionRefused => {
                    "connection refused (stale socket: the daemon is not running)".to_string()
                }
                std::io::ErrorKind::PermissionDenied => {
                    "permission denied (only root and the socket's group may connect)".to_string()
                }
                _ => e.to_string(),
            };
            ClientError::Unreachable {
                peer: "conductor-netd",
                socket: self.socket.display().to_string(),
                why,
            }
        })
    }

    /// Send one request and return the raw answer (for `conductor-netd api`).
    pub async fn raw(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> Result<RawReply> {
        let stream = self.connect().await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Transport(format!("HTTP handshake: {e}")))?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "conductor-netd");
        if body.is_some() {
            builder = builder.header("content-type", "application/json");
        }
        let req = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Transport(format!("build request {method} {path}: {e}")))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Transport(format!("{method} {path}: {e}")))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| {
                ClientError::Transport(format!("{method} {path}: reading the answer: {e}"))
            })?
            .to_bytes();
        driver.abort();
        Ok(RawReply { status, body })
    }
}
