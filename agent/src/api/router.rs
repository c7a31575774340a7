//! The API's handlers on axum's router, built from the route table in
//! `routes`. Bodies are JSON objects of at most `BODY_LIMIT` bytes with
//! unknown fields refused; every failure answers `{"error":{...}}`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRef, FromRequest, Path, Query, Request, State};
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, MethodRouter};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::error::ApiError;
use super::routes::{self, Route};
use super::types::{
    AttachRequest, CreateNetwork, DetachRequest, DockerEngineRequest, PolicyRules, PortRequest,
    SetPolicy,
};
use super::{BodyTimeout, BODY_LIMIT, BODY_TIMEOUT};
use crate::docker::DockerIntegration;
use crate::error::Error;
use crate::kernel::Kernel;
use crate::ports::{HostSide, Ports};
use crate::service::Service;

/// What the handlers reach: the service, and the Docker integration when
/// the daemon runs one.
pub struct AppState<K: Kernel> {
    pub svc: Arc<Service<K>>,
    pub docker: Option<Arc<DockerIntegration>>,
    pub ports: Option<Arc<Ports>>,
}

impl<K: Kernel> Clone for AppState<K> {
    fn clone(&self) -> Self {
        AppState {
            svc: self.svc.clone(),
            docker: self.docker.clone(),
            ports: self.ports.clone(),
        }
    }
}

impl<K: Kernel> FromRef<AppState<K>> for Arc<Service<K>> {
    fn from_ref(state: &AppState<K>) -> Self {
        state.svc.clone()
    }
}

type Svc<K> = State<Arc<Service<K>>>;
type Answer = Result<Response, ApiError>;

/// The whole API as a router over one service (no Docker integration).
pub fn router<K: Kernel>(svc: Arc<Service<K>>) -> Router {
    with_docker(svc, None)
}

/// The whole API, with the Docker integration's routes served.
pub fn with_docker<K: Kernel>(
    svc: Arc<Service<K>>,
    docker: Option<Arc<DockerIntegration>>,
) -> Router {
    with_parts(svc, docker, None)
}

/// The whole API with the daemon's optional parts.
pub fn with_parts<K: Kernel>(
    svc: Arc<Service<K>>,
    docker: Option<Arc<DockerIntegration>>,
    ports: Option<Arc<Ports>>,
) -> Router {
    fn on<K: Kernel>(
        r: Router<AppState<K>>,
        route: Route,
        m: MethodRouter<AppState<K>>,
    ) -> Router<AppState<K>> {
        r.route(route.path, m)
    }
    let r = Router::new();
    let r = on(r, routes::STATUS, get(status::<K>));
    let r = on(r, routes::DOCTOR, get(doctor::<K>));
    let r = on(
        r,
        routes::LIST_NETWORKS,
        get(list_networks::<K>).post(create_network::<K>),
    );
    let r = on(
        r,
        routes::GET_NETWORK,
        get(get_network::<K>).delete(remove_network::<K>),
    );
    let r = on(
        r,
        routes::ATTACH,
        get(network_endpoints::<K>).post(attach::<K>),
    );
    let r = on(r, routes::DETACH, post(detach::<K>));
    let r = on(r, routes::LIST_ENDPOINTS, get(list_endpoints::<K>));
    let r = on(
        r,
        routes::GET_ENDPOINT,
        get(get_endpoint::<K>).delete(detach_endpoint::<K>),
    );
    let r = on(
        r,
        routes::LIST_DOCKER,
        get(list_docker::<K>).post(register_docker::<K>),
    );
    let r = on(
        r,
        routes::GET_DOCKER,
        get(get_docker::<K>).delete(unregister_docker::<K>),
    );
    let r = on(r, routes::LIST_POLICIES, get(list_policies::<K>));
    let r = on(
        r,
        routes::GET_POLICY,
        get(get_policy::<K>)
            .put(set_policy::<K>)
            .delete(reset_policy::<K>),
    );
    let r = on(r, routes::ADD_POLICY_RULES, post(add_policy_rules::<K>));
    let r = on(
        r,
        routes::REMOVE_POLICY_RULES,
        post(remove_policy_rules::<K>),
    );
    let r = on(
        r,
        routes::LIST_PORTS,
        get(list_ports::<K>).post(add_port::<K>),
    );
    let r = on(r, routes::REMOVE_PORT, delete(remove_port::<K>));
    let r = on(r, routes::LIST_LABELLED, get(list_labelled::<K>));
    r.fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(AppState { svc, docker, ports })
}

/// Containers labelled conductor.network=NET (empty without Docker).
async fn list_labelled<K: Kernel>(State(state): State<AppState<K>>) -> Answer {
    let all = state
        .docker
        .as_ref()
        .map(|d| d.labelled().all())
        .unwrap_or_default();
    json(StatusCode::OK, &all)
}

fn docker_of<K: Kernel>(state: &AppState<K>) -> Result<Arc<DockerIntegration>, ApiError> {
    state.docker.clone().ok_or_else(|| {
        ApiError::Service(Error::Internal(
            "this conductor-netd runs without its Docker integration".into(),
        ))
    })
}

async fn list_docker<K: Kernel>(State(state): State<AppState<K>>) -> Answer {
    json(StatusCode::OK, &docker_of(&state)?.list())
}

async fn register_docker<K: Kernel>(
    State(state): State<AppState<K>>,
    ApiJson(req): ApiJson<DockerEngineRequest>,
) -> Answer {
    let docker = docker_of(&state)?;
    let (created, view) = detached(async move { docker.register(req).await }).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    json(status, &view)
}

async fn get_docker<K: Kernel>(
    State(state): State<AppState<K>>,
    Path(name): Path<String>,
) -> Answer {
    json(StatusCode::OK, &docker_of(&state)?.get(&name)?)
}

async fn unregister_docker<K: Kernel>(
    State(state): State<AppState<K>>,
    Path(name): Path<String>,
) -> Answer {
    let docker = docker_of(&state)?;
    let view = detached(async move { docker.unregister(&name).await }).await?;
    json(StatusCode::OK, &view)
}

fn ports_of<K: Kernel>(state: &AppState<K>) -> Result<Arc<Ports>, ApiError> {
    state.ports.clone().ok_or_else(|| {
        ApiError::Service(Error::Internal(
            "this conductor-netd runs without published ports".into(),
        ))
    })
}

async fn list_ports<K: Kernel>(State(state): State<AppState<K>>) -> Answer {
    json(StatusCode::OK, &ports_of(&state)?.list().await)
}

async fn add_port<K: Kernel>(
    State(state): State<AppState<K>>,
    ApiJson(req): ApiJson<PortRequest>,
) -> Answer {
    let ports = ports_of(&state)?;
    let spec = req.spec()?;
    json(
        StatusCode::CREATED,
        &detached(async move { ports.add(spec).await }).await?,
    )
}

async fn remove_port<K: Kernel>(
    State(state): State<AppState<K>>,
    Path(id): Path<String>,
) -> Answer {
    let ports = ports_of(&state)?;
    let side = HostSide::parse(&id)?;
    json(
        StatusCode::OK,
        &detached(async move { ports.remove(&side).await }).await?,
    )
}

fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Answer {
    Ok((status, Json(value)).into_response())
}

/// Run a change to the service on a task of its own: a client that hangs up
/// (or a connection closed by a time-out) must not cancel it half-way.
async fn detached<T, F>(work: F) -> Result<T, ApiError>
where
    F: std::future::Future<Output = crate::error::Result<T>> + Send + 'static,
    T: Send + 'static,
{
    tokio::spawn(work)
        .await
        .map_err(|e| {
            ApiError::Service(crate::error::Error::Internal(format!("request task: {e}")))
        })?
        .map_err(ApiError::Service)
}

async fn status<K: Kernel>(State(svc): Svc<K>) -> Answer {
    json(StatusCode::OK, &svc.status())
}

async fn doctor<K: Kernel>(State(svc): Svc<K>) -> Answer {
    let report = svc
        .probe()
        .unwrap_or_else(|| serde_json::json!({"probed": false}));
    json(StatusCode::OK, &report)
}

async fn list_networks<K: Kernel>(State(svc): Svc<K>) -> Answer {
    json(StatusCode::OK, &svc.networks())
}

async fn create_network<K: Kernel>(
    State(svc): Svc<K>,
    ApiJson(req): ApiJson<CreateNetwork>,
) -> Answer {
    json(
        StatusCode::CREATED,
        &detached(async move { svc.create_network(req).await }).await?,
    )
}

async fn get_network<K: Kernel>(State(svc): Svc<K>, Path(name): Path<String>) -> Answer {
    json(StatusCode::OK, &svc.network(&name)?)
}

#[derive(Debug, Default, Deserialize)]
struct RawQuery {
    force: Option<String>,
    nowait: Option<String>,
}

/// `?flag`, `?flag=true|1` and `?flag=false|0`; anything else is a 400 that
/// names the parameter.
fn flag(name: &str, value: Option<&str>) -> Result<bool, ApiError> {
    match value {
        None => Ok(false),
        Some("true" | "1" | "") => Ok(true),
        Some("false" | "0") => Ok(false),
        Some(other) => Err(ApiError::BadQuery {
            name: name.to_string(),
            value: other.to_string(),
            reason: "expected true or false".into(),
        }),
    }
}

fn query(uri: &Uri) -> Result<RawQuery, ApiError> {
    Query::<RawQuery>::try_from_uri(uri)
        .map(|Query(q)| q)
        .map_err(|e| ApiError::BadQuery {
            name: "query".into(),
            value: uri.query().unwrap_or_default().to_string(),
            reason: e.body_text(),
        })
}

async fn remove_network<K: Kernel>(
    State(svc): Svc<K>,
    Path(name): Path<String>,
    uri: Uri,
) -> Answer {
    let force = flag("force", query(&uri)?.force.as_deref())?;
    json(
        StatusCode::OK,
        &detached(async move { svc.remove_network(&name, force).await }).await?,
    )
}

async fn network_endpoints<K: Kernel>(State(svc): Svc<K>, Path(name): Path<String>) -> Answer {
    json(StatusCode::OK, &svc.endpoints(Some(&name))?)
}

async fn attach<K: Kernel>(
    State(svc): Svc<K>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<AttachRequest>,
) -> Answer {
    let r = detached(async move { svc.attach(&name, req).await }).await?;
    let status = if r.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    json(status, &r)
}

async fn detach<K: Kernel>(
    State(svc): Svc<K>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<DetachRequest>,
) -> Answer {
    let target = req.target()?;
    let wait = req.wait.unwrap_or(true);
    json(
        StatusCode::OK,
        &detached(async move { svc.detach(&name, &target, wait).await }).await?,
    )
}

async fn list_endpoints<K: Kernel>(State(svc): Svc<K>) -> Answer {
    json(StatusCode::OK, &svc.endpoints(None)?)
}

async fn get_endpoint<K: Kernel>(State(svc): Svc<K>, Path(id): Path<String>) -> Answer {
    json(StatusCode::OK, &svc.endpoint(&id)?)
}

async fn detach_endpoint<K: Kernel>(
    State(svc): Svc<K>,
    Path(id): Path<String>,
    uri: Uri,
) -> Answer {
    let wait = !flag("nowait", query(&uri)?.nowait.as_deref())?;
    json(
        StatusCode::OK,
        &detached(async move { svc.detach_id(&id, wait).await }).await?,
    )
}

// Egress policies: changes are checked whole, written to the state
// directory, then in force for the next connection or query.

async fn list_policies<K: Kernel>(State(svc): Svc<K>) -> Answer {
    json(StatusCode::OK, &svc.policies().list())
}

async fn get_policy<K: Kernel>(State(svc): Svc<K>, Path(network): Path<String>) -> Answer {
    let view = svc.policies().view(&network).map_err(Error::from)?;
    json(StatusCode::OK, &view)
}

async fn set_policy<K: Kernel>(
    State(svc): Svc<K>,
    Path(network): Path<String>,
    ApiJson(spec): ApiJson<SetPolicy>,
) -> Answer {
    let view = detached(async move {
        let p = svc.policies().clone();
        p.set(&network, spec).await.map_err(Error::from)
    })
    .await?;
    json(StatusCode::OK, &view)
}

async fn reset_policy<K: Kernel>(State(svc): Svc<K>, Path(network): Path<String>) -> Answer {
    let view = detached(async move {
        let p = svc.policies().clone();
        p.set(&network, SetPolicy::default())
            .await
            .map_err(Error::from)
    })
    .await?;
    json(StatusCode::OK, &view)
}

async fn add_policy_rules<K: Kernel>(
    State(svc): Svc<K>,
    Path(network): Path<String>,
    ApiJson(req): ApiJson<PolicyRules>,
) -> Answer {
    let view = detached(async move {
        let p = svc.policies().clone();
        p.add(&network, &req.rules).await.map_err(Error::from)
    })
    .await?;
    json(StatusCode::OK, &view)
}

async fn remove_policy_rules<K: Kernel>(
    State(svc): Svc<K>,
    Path(network): Path<String>,
    ApiJson(req): ApiJson<PolicyRules>,
) -> Answer {
    let view = detached(async move {
        let p = svc.policies().clone();
        p.remove(&network, &req.rules).await.map_err(Error::from)
    })
    .await?;
    json(StatusCode::OK, &view)
}

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::NoRoute {
        method: method.to_string(),
        path: uri.path().to_string(),
    }
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_string(),
    }
}

/// A JSON object body: at most `BODY_LIMIT` bytes (a larger declared length
/// is refused before reading), unknown fields refused by the types.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > BODY_LIMIT) {
            return Err(ApiError::TooLarge { limit: BODY_LIMIT });
        }
        let limit = req
            .extensions()
            .get::<BodyTimeout>()
            .map_or(BODY_TIMEOUT, |t| t.0);
        let body: Body = req.into_body();
        let read = tokio::time::timeout(limit, axum::body::to_bytes(body, BODY_LIMIT));
        let bytes = read
            .await
            .map_err(|_| ApiError::Timeout {
                ms: limit.as_millis() as u64,
            })?
            .map_err(|e| {
                let too_large = std::error::Error::source(&e)
                    .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
                if too_large {
                    ApiError::TooLarge { limit: BODY_LIMIT }
                } else {
                    ApiError::BadBody(format!("reading the body failed: {e}"))
                }
            })?;
        parse_body(&bytes).map(ApiJson)
    }
}

/// A JSON object, with errors that say what was wrong.
pub fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        None => Err(ApiError::BadBody(
            "the body is empty; a JSON object is expected".into(),
        )),
        Some(b'{') => serde_json::from_slice(body).map_err(|e| ApiError::BadBody(e.to_string())),
        Some(_) => Err(ApiError::BadBody(
            "invalid type: a JSON object is expected".into(),
        )),
    }
}
