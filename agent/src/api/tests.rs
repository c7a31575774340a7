//! API tests over the in-memory kernel: every route, the error shapes, and
//! agreement with agent/openapi.json (routes, statuses and response shapes).

use std::collections::{BTreeMap, BTreeSet};

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::routes::{self, template_of, COMMON_STATUSES};
use super::*;
use crate::kernel::fake::FakeKernel;
use crate::service::tests::Env;
use crate::service::Service;

/// An answer of the router, as a test sees it.
#[derive(Debug)]
struct Reply {
    status: u16,
    body: Value,
}

/// One request through the whole router, in process.
async fn dispatch(
    svc: &Arc<Service<FakeKernel>>,
    method: &str,
    path: &str,
    query: &str,
    body: &[u8],
) -> Reply {
    let uri = if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{query}")
    };
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_vec()))
        .unwrap();
    let resp = router::router(svc.clone()).oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Reply { status, body }
}

const OPENAPI: &str = include_str!("../../openapi.json");

fn spec() -> Value {
    serde_json::from_str(OPENAPI).expect("openapi.json parses")
}

/// (METHOD, path) -> statuses, from the OpenAPI document.
fn documented() -> BTreeMap<(String, String), BTreeSet<u16>> {
    let spec = spec();
    let mut out = BTreeMap::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if method == "parameters" {
                continue;
            }
            let statuses = op["responses"]
                .as_object()
                .unwrap()
                .keys()
                .map(|k| k.parse::<u16>().unwrap())
                .collect();
            out.insert((method.to_uppercase(), path.clone()), statuses);
        }
    }
    out
}

#[test]
fn routes_match_the_openapi_document() {
    let implemented: BTreeMap<(String, String), BTreeSet<u16>> = routes::ALL
        .iter()
        .map(|r| {
            (
                (r.method.to_string(), r.path.to_string()),
                r.statuses.iter().copied().collect(),
            )
        })
        .collect();
    assert_eq!(implemented, documented());
}

fn resolve<'a>(spec: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => {
            let name = r.trim_start_matches("#/components/schemas/");
            resolve(spec, &spec["components"]["schemas"][name])
        }
        None => schema,
    }
}

/// A small validator for the subset of JSON Schema openapi.json uses.
fn validate(spec: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let schema = resolve(spec, schema);
    if let Some(all) = schema["allOf"].as_array() {
        for s in all {
            validate(spec, s, value, at)?;
        }
        return Ok(());
    }
    match schema["type"].as_str() {
        Some("object") => {
            let obj = value
                .as_object()
                .ok_or(format!("{at}: not an object: {value}"))?;
            for req in schema["required"].as_array().into_iter().flatten() {
                let key = req.as_str().unwrap();
                if !obj.contains_key(key) {
                    return Err(format!("{at}: missing required {key:?} in {value}"));
                }
            }
            if let Some(props) = schema["properties"].as_object() {
                for (k, v) in obj {
                    if let Some(ps) = props.get(k) {
                        validate(spec, ps, v, &format!("{at}.{k}"))?;
                    }
                }
            }
            Ok(())
        }
        Some("array") => {
            let arr = value.as_array().ok_or(format!("{at}: not an array"))?;
            for (i, v) in arr.iter().enumerate() {
                validate(spec, &schema["items"], v, &format!("{at}[{i}]"))?;
            }
            Ok(())
        }
        Some("string") => {
            let s = value
                .as_str()
                .ok_or(format!("{at}: not a string: {value}"))?;
            if let Some(allowed) = schema["enum"].as_array() {
                if !allowed.iter().any(|a| a == s) {
                    return Err(format!("{at}: {s:?} not in {allowed:?}"));
                }
            }
            Ok(())
        }
        Some("integer") => value
            .as_i64()
            .map(drop)
            .ok_or(format!("{at}: not an integer")),
        Some("boolean") => value
            .as_bool()
            .map(drop)
            .ok_or(format!("{at}: not a boolean")),
        _ => Ok(()),
    }
}

/// Check a reply against the document: the status is listed for the route
/// and the body matches that status's schema.
fn conforms(method: &str, path: &str, reply: &Reply) {
    let spec = spec();
    let template = template_of(path).expect("a documented path");
    let op = &spec["paths"][template][method.to_lowercase()];
    let resp = &op["responses"][reply.status.to_string()];
    assert!(
        !resp.is_null(),
        "{method} {path}: status {} not documented ({})",
        reply.status,
        reply.body
    );
    let resp = match resp["$ref"].as_str() {
        Some(r) => {
            &spec["components"]["responses"][r.trim_start_matches("#/components/responses/")]
        }
        None => resp,
    };
    let schema = &resp["content"]["application/json"]["schema"];
    validate(
        &spec,
        schema,
        &reply.body,
        &format!("{method} {path} {}", reply.status),
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

async fn call(svc: &Arc<Service<FakeKernel>>, method: &str, path: &str, body: Value) -> Reply {
    let bytes = if body.is_null() {
        Vec::new()
    } else {
        serde_json::to_vec(&body).unwrap()
    };
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let reply = dispatch(svc, method, path, query, &bytes).await;
    conforms(method, path, &reply);
    reply
}

#[tokio::test]
async fn every_route_answers_as_documented() {
    let env = Env::new("api");
    let svc = Arc::new(env.service().await);
    env.ns("c1");
    env.ns("c2");
    let r = call(
        &svc,
        "POST",
        "/v1/networks",
        json!({"name": "n", "subnet": "10.9.0.0/24"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["gateway"], "10.9.0.1");
    let r = call(&svc, "POST", "/v1/networks", json!({"name": "n"})).await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (409, Some("conflict"))
    );
    assert_eq!(
        call(&svc, "GET", "/v1/networks", Value::Null).await.status,
        200
    );
    assert_eq!(
        call(&svc, "GET", "/v1/networks/n", Value::Null)
            .await
            .status,
        200
    );
    assert_eq!(
        call(&svc, "GET", "/v1/networks/zz", Value::Null)
            .await
            .status,
        404
    );

    let r = call(
        &svc,
        "POST",
        "/v1/networks/n/endpoints",
        json!({"netns": "c1"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        r.body["endpoint"]["result"]["ips"][0]["address"],
        "10.9.0.2/24"
    );
    let id = r.body["endpoint"]["id"].as_str().unwrap().to_string();
    let again = call(
        &svc,
        "POST",
        "/v1/networks/n/endpoints",
        json!({"netns": "c1"}),
    )
    .await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body["endpoint"], r.body["endpoint"]);
    let r = call(
        &svc,
        "POST",
        "/v1/networks/n/endpoints",
        json!({"netns": "c2", "ip": "10.9.0.2"}),
    )
    .await;
    assert_eq!(r.status, 409);
    let r = call(
        &svc,
        "POST",
        "/v1/networks/n/endpoints",
        json!({"netns": "nope"}),
    )
    .await;
    assert_eq!(r.status, 404);
    let r = call(
        &svc,
        "POST",
        "/v1/networks/zz/endpoints",
        json!({"netns": "c2"}),
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(
        call(&svc, "GET", "/v1/networks/n/endpoints", Value::Null)
            .await
            .status,
        200
    );
    assert_eq!(
        call(&svc, "GET", "/v1/networks/zz/endpoints", Value::Null)
            .await
            .status,
        404
    );
    assert_eq!(
        call(&svc, "GET", "/v1/endpoints", Value::Null).await.status,
        200
    );
    assert_eq!(
        call(&svc, "GET", &format!("/v1/endpoints/{id}"), Value::Null)
            .await
            .status,
        200
    );
    assert_eq!(
        call(&svc, "GET", "/v1/endpoints/none", Value::Null)
            .await
            .status,
        404
    );
    let s = call(&svc, "GET", "/v1/status", Value::Null).await;
    assert_eq!(s.body["networks"][0]["endpoints"][0]["id"], id.as_str());
    assert_eq!(
        call(&svc, "GET", "/v1/doctor", Value::Null).await.status,
        200
    );

    let r = call(&svc, "DELETE", "/v1/networks/n", Value::Null).await;
    assert_eq!(r.status, 409);
    let r = call(&svc, "DELETE", "/v1/networks/n?force=maybe", Value::Null).await;
    assert_eq!(r.status, 400);
    let r = call(
        &svc,
        "POST",
        "/v1/networks/n/detach",
        json!({"netns": "c1"}),
    )
    .await;
    assert_eq!((r.status, &r.body["detached"]), (200, &json!(true)));
    let r = call(
        &svc,
        "POST",
        "/v1/networks/n/detach",
        json!({"netns": "c1"}),
    )
    .await;
    assert_eq!((r.status, &r.body["detached"]), (200, &json!(false)));
    let r = call(
        &svc,
        "POST",
        "/v1/networks/n/detach",
        json!({"netns": "gone"}),
    )
    .await;
    assert_eq!(r.status, 404);
    call(
        &svc,
        "POST",
        "/v1/networks/n/endpoints",
        json!({"netns": "c2"}),
    )
    .await;
    let id2 = svc.endpoints(None).unwrap()[0].endpoint.id.clone();
    assert_eq!(
        call(&svc, "DELETE", &format!("/v1/endpoints/{id2}"), Value::Null)
            .await
            .status,
        200
    );
    assert_eq!(
        call(&svc, "DELETE", &format!("/v1/endpoints/{id2}"), Value::Null)
            .await
            .status,
        404
    );
    call(
        &svc,
        "POST",
        "/v1/networks/n/endpoints",
        json!({"netns": "c2"}),
    )
    .await;
    let r = call(&svc, "DELETE", "/v1/networks/n?force=true", Value::Null).await;
    assert_eq!((r.status, &r.body["detached"]), (200, &json!(1)));
    assert_eq!(
        call(&svc, "DELETE", "/v1/networks/n", Value::Null)
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn malformed_bodies_are_400_and_change_nothing() {
    let env = Env::new("api-bad");
    let svc = Arc::new(env.service().await);
    let cases: Vec<(&[u8], &str)> = vec![
        (b"{\"name\": ", "EOF"),
        (b"{\"name\": \"a\", \"colour\": 1}", "colour"),
        (b"{\"name\": 5}", "invalid type"),
        (b"{\"name\": \"a\", \"mtu\": \"big\"}", "invalid type"),
        (b"[]", "invalid type"),
        (b"", "empty"),
    ];
    for (body, text) in cases {
        let r = dispatch(&svc, "POST", "/v1/networks", "", body).await;
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(body));
        assert_eq!(r.body["error"]["code"], "malformed_body");
        let msg = r.body["error"]["message"].as_str().unwrap();
        assert!(msg.contains(text), "{msg}");
    }
    let big = format!("{{\"name\": \"{}\"}}", "a".repeat(BODY_LIMIT));
    let r = dispatch(&svc, "POST", "/v1/networks", "", big.as_bytes()).await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (413, Some("payload_too_large"))
    );
    let r = dispatch(
        &svc,
        "POST",
        "/v1/networks/x/endpoints",
        "",
        b"{\"pid\": \"1\"}",
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(svc.networks().is_empty());
}

#[tokio::test]
async fn unknown_routes_and_methods() {
    let env = Env::new("api-routes");
    let svc = Arc::new(env.service().await);
    let r = dispatch(&svc, "GET", "/v2/networks", "", b"").await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (404, Some("no_route"))
    );
    let r = dispatch(&svc, "PUT", "/v1/networks", "", b"").await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (405, Some("method_not_allowed"))
    );
    assert!(COMMON_STATUSES.contains(&r.status));
}

#[tokio::test]
async fn the_router_serves_every_route_of_the_table() {
    let env = Env::new("api-table");
    let svc = Arc::new(env.service().await);
    for route in routes::ALL {
        let path = route.url(&["x"]);
        let r = dispatch(&svc, route.method, &path, "", b"{}").await;
        let code = r.body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            code != "no_route" && code != "method_not_allowed",
            "{} {}: {} {}",
            route.method,
            route.path,
            r.status,
            r.body
        );
    }
}

#[tokio::test]
async fn bad_query_flags_name_the_parameter() {
    let env = Env::new("api-query");
    let svc = Arc::new(env.service().await);
    let r = dispatch(&svc, "DELETE", "/v1/endpoints/x", "nowait=perhaps", b"").await;
    assert_eq!(r.status, 400, "{}", r.body);
    let msg = r.body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("nowait") && msg.contains("perhaps"), "{msg}");
}

// Egress policies (issue 12).

#[tokio::test]
async fn policies_change_whole_or_not_at_all() {
    let env = Env::new("apipol");
    let svc = Arc::new(env.service().await);
    let r = call(&svc, "GET", "/v1/policies/web", Value::Null).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        (
            r.body["preset"].as_str(),
            r.body["rules"].as_array().map(Vec::len)
        ),
        (Some("open"), Some(0))
    );
    let r = call(
        &svc,
        "PUT",
        "/v1/policies/web",
        json!({"preset": "balanced", "rules": ["deny *.bad.test", "allow port 443"]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let before = r.body.clone();
    // A rule that does not parse: 400 naming the rule and its column, and
    // the policy in force is unchanged.
    let r = call(
        &svc,
        "PUT",
        "/v1/policies/web",
        json!({"preset": "locked", "rules": ["allow ok.test", "deny 10.0.0.0/33"]}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    let msg = r.body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("rule 2") && msg.contains("column 6") && msg.contains("10.0.0.0/33"),
        "{msg}"
    );
    let r = call(
        &svc,
        "POST",
        "/v1/policies/web/rules",
        json!({"rules": ["deny port 0"]}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = call(&svc, "PUT", "/v1/policies/web", json!({"preset": "closed"})).await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = call(
        &svc,
        "PUT",
        "/v1/policies/web",
        json!({"rules": [], "colour": 1}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = call(
        &svc,
        "POST",
        "/v1/policies/web/rules/remove",
        json!({"rules": ["deny not.there"]}),
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = call(
        &svc,
        "PUT",
        "/v1/policies/bad..%2Fname",
        json!({"rules": []}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = call(&svc, "GET", "/v1/policies/web", Value::Null).await;
    assert_eq!(r.body, before);

    let r = call(
        &svc,
        "POST",
        "/v1/policies/web/rules",
        json!({"rules": ["deny 198.51.100.11"]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["rules"][2], "deny 198.51.100.11/32");
    // In force at once for the deciders.
    let p = svc.policies().get("web").unwrap();
    assert!(
        !p.decide(None, Some("198.51.100.11".parse().unwrap()), 443)
            .allow
    );
    let r = call(
        &svc,
        "POST",
        "/v1/policies/web/rules/remove",
        json!({"rules": ["deny 198.51.100.11/32"]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = call(&svc, "GET", "/v1/policies", Value::Null).await;
    assert_eq!(r.body.as_array().map(Vec::len), Some(1), "{}", r.body);
    let r = call(&svc, "DELETE", "/v1/policies/web", Value::Null).await;
    assert_eq!((r.status, r.body["preset"].as_str()), (200, Some("open")));
    assert!(svc.policies().get("web").is_none());
}
