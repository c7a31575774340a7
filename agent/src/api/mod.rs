//! The HTTP/JSON API: versioned routes under `/v1/`, JSON bodies (at most
//! 64 KiB, unknown fields refused), errors as
//! `{"error":{"code":"...","message":"..."}}` with a matching status.
//!
//! `dispatch` is the whole API as a function of (method, path, query, body),
//! so it is tested without a socket; `server` puts it on a unix socket and
//! `client` is what the CLI uses. agent/openapi.json describes the same
//! routes; a test keeps the two in step.

pub mod client;
pub mod server;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::kernel::Kernel;
use crate::model::{AttachRequest, CreateNetwork, DetachRequest};
use crate::service::Service;

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Every route: (method, path template, statuses it can answer with).
/// Kept equal to agent/openapi.json by a test.
pub const ROUTES: &[(&str, &str, &[u16])] = &[
    ("GET", "/v1/status", &[200, 403]),
    ("GET", "/v1/doctor", &[200, 403]),
    ("GET", "/v1/networks", &[200, 403]),
    ("POST", "/v1/networks", &[201, 400, 403, 409, 413, 500]),
    ("GET", "/v1/networks/{name}", &[200, 403, 404]),
    (
        "DELETE",
        "/v1/networks/{name}",
        &[200, 400, 403, 404, 409, 500],
    ),
    ("GET", "/v1/networks/{name}/endpoints", &[200, 403, 404]),
    (
        "POST",
        "/v1/networks/{name}/endpoints",
        &[200, 201, 400, 403, 404, 409, 413, 500],
    ),
    (
        "POST",
        "/v1/networks/{name}/detach",
        &[200, 400, 403, 404, 413, 500],
    ),
    ("GET", "/v1/endpoints", &[200, 403]),
    ("GET", "/v1/endpoints/{id}", &[200, 403, 404]),
    ("DELETE", "/v1/endpoints/{id}", &[200, 400, 403, 404, 500]),
];

/// A response before it is put on the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub body: serde_json::Value,
}

impl Reply {
    pub fn ok<T: Serialize>(status: u16, value: &T) -> Reply {
        match serde_json::to_value(value) {
            Ok(body) => Reply { status, body },
            Err(e) => Reply::error(&Error::Internal(format!("serialize response: {e}"))),
        }
    }

    pub fn error(e: &Error) -> Reply {
        Reply {
            status: e.status(),
            body: serde_json::json!({
                "error": { "code": e.code(), "message": e.to_string() }
            }),
        }
    }
}

fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    if body.len() > BODY_LIMIT {
        return Err(Error::TooLarge { limit: BODY_LIMIT });
    }
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        None => {
            return Err(Error::BadBody(
                "the body is empty; a JSON object is expected".into(),
            ))
        }
        Some(b'{') => {}
        Some(_) => {
            return Err(Error::BadBody(
                "invalid type: a JSON object is expected".into(),
            ))
        }
    }
    serde_json::from_slice(body).map_err(|e| Error::BadBody(e.to_string()))
}

fn query_flag(query: &str, key: &str) -> Result<bool> {
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, "true"));
        if k == key {
            return match v {
                "true" | "1" | "" => Ok(true),
                "false" | "0" => Ok(false),
                other => Err(Error::invalid(
                    key_name(key),
                    other,
                    "expected true or false",
                )),
            };
        }
    }
    Ok(false)
}

fn key_name(key: &str) -> &'static str {
    match key {
        "force" => "query parameter force",
        "nowait" => "query parameter nowait",
        _ => "query parameter",
    }
}

/// Match a concrete path against the route table: the template and the
/// value of its one parameter, if any.
pub fn match_route(path: &str) -> Option<(&'static str, Option<String>)> {
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    for (_, template, _) in ROUTES {
        let tsegs: Vec<&str> = template.split('/').collect();
        if tsegs.len() != segs.len() {
            continue;
        }
        let mut param = None;
        let matched = tsegs.iter().zip(&segs).all(|(t, s)| {
            if t.starts_with('{') {
                if s.is_empty() {
                    return false;
                }
                param = Some((*s).to_string());
                true
            } else {
                t == s
            }
        });
        if matched {
            return Some((template, param));
        }
    }
    None
}

/// The whole API: answer one request.
pub async fn dispatch<K: Kernel>(
    svc: &Service<K>,
    method: &str,
    path: &str,
    query: &str,
    body: &[u8],
) -> Reply {
    match route(svc, method, path, query, body).await {
        Ok(r) => r,
        Err(e) => Reply::error(&e),
    }
}

async fn route<K: Kernel>(
    svc: &Service<K>,
    method: &str,
    path: &str,
    query: &str,
    body: &[u8],
) -> Result<Reply> {
    let Some((template, param)) = match_route(path) else {
        return Err(Error::NoRoute {
            method: method.to_string(),
            path: path.to_string(),
        });
    };
    let p = param.unwrap_or_default();
    let reply = match (method, template) {
        ("GET", "/v1/status") => Reply::ok(200, &svc.status()),
        ("GET", "/v1/doctor") => Reply::ok(
            200,
            &svc.probe()
                .unwrap_or_else(|| serde_json::json!({"probed": false})),
        ),
        ("GET", "/v1/networks") => Reply::ok(200, &svc.networks()),
        ("POST", "/v1/networks") => {
            let req: CreateNetwork = parse_body(body)?;
            Reply::ok(201, &svc.create_network(req).await?)
        }
        ("GET", "/v1/networks/{name}") => Reply::ok(200, &svc.network(&p)?),
        ("DELETE", "/v1/networks/{name}") => {
            let force = query_flag(query, "force")?;
            Reply::ok(200, &svc.remove_network(&p, force).await?)
        }
        ("GET", "/v1/networks/{name}/endpoints") => Reply::ok(200, &svc.endpoints(Some(&p))?),
        ("POST", "/v1/networks/{name}/endpoints") => {
            let req: AttachRequest = parse_body(body)?;
            let r = svc.attach(&p, req).await?;
            Reply::ok(if r.created { 201 } else { 200 }, &r)
        }
        ("POST", "/v1/networks/{name}/detach") => {
            let req: DetachRequest = parse_body(body)?;
            let target = req.target()?;
            let wait = req.wait.unwrap_or(true);
            Reply::ok(200, &svc.detach(&p, &target, wait).await?)
        }
        ("GET", "/v1/endpoints") => Reply::ok(200, &svc.endpoints(None)?),
        ("GET", "/v1/endpoints/{id}") => Reply::ok(200, &svc.endpoint(&p)?),
        ("DELETE", "/v1/endpoints/{id}") => {
            let wait = !query_flag(query, "nowait")?;
            Reply::ok(200, &svc.detach_id(&p, wait).await?)
        }
        _ => {
            return Err(Error::MethodNotAllowed {
                method: method.to_string(),
                path: path.to_string(),
            })
        }
    };
    Ok(reply)
}

/// Statuses that any route may answer with besides its own (routing and
/// transport errors).
pub const COMMON_STATUSES: &[u16] = &[404, 405, 413];

/// Convenience for tests and tools: the body as bytes.
pub fn to_bytes(value: &serde_json::Value) -> Bytes {
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
