//! Every route of the API, once: the server's router is built from these
//! constants and the client builds its URLs with them, so no path is spelled
//! twice. agent/openapi.json documents the same table (a test compares them).

use std::fmt::Write;

/// One route: method, path template (`{param}` segments, as axum writes
/// them) and the statuses it can answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub statuses: &'static [u16],
}

impl Route {
    /// The concrete path: each `{param}` replaced, in order, by a value
    /// percent-encoded as one path segment.
    pub fn url(&self, params: &[&str]) -> String {
        let mut out = String::with_capacity(self.path.len() + 16);
        let mut values = params.iter();
        for segment in self.path.split('/').skip(1) {
            out.push('/');
            if segment.starts_with('{') {
                let value = values.next().copied().unwrap_or_default();
                for part in percent_encoding::utf8_percent_encode(value, SEGMENT) {
                    out.push_str(part);
                }
            } else {
                out.push_str(segment);
            }
        }
        out
    }

    /// `url` plus a query string of `key=value` pairs (values are plain
    /// words here: booleans).
    pub fn url_with_query(&self, params: &[&str], query: &[(&str, &str)]) -> String {
        let mut out = self.url(params);
        for (i, (k, v)) in query.iter().enumerate() {
            let _ = write!(out, "{}{k}={v}", if i == 0 { '?' } else { '&' });
        }
        out
    }
}

/// Everything but unreserved characters is encoded inside a segment.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

pub const STATUS: Route = Route {
    method: "GET",
    path: "/v1/status",
    statuses: &[200, 403],
};
pub const DOCTOR: Route = Route {
    method: "GET",
    path: "/v1/doctor",
    statuses: &[200, 403],
};
pub const LIST_NETWORKS: Route = Route {
    method: "GET",
    path: "/v1/networks",
    statuses: &[200, 403],
};
pub const CREATE_NETWORK: Route = Route {
    method: "POST",
    path: "/v1/networks",
    statuses: &[201, 400, 403, 409, 413, 500],
};
pub const GET_NETWORK: Route = Route {
    method: "GET",
    path: "/v1/networks/{name}",
    statuses: &[200, 403, 404],
};
pub const REMOVE_NETWORK: Route = Route {
    method: "DELETE",
    path: "/v1/networks/{name}",
    statuses: &[200, 400, 403, 404, 409, 500],
};
pub const NETWORK_ENDPOINTS: Route = Route {
    method: "GET",
    path: "/v1/networks/{name}/endpoints",
    statuses: &[200, 403, 404],
};
pub const ATTACH: Route = Route {
    method: "POST",
    path: "/v1/networks/{name}/endpoints",
    statuses: &[200, 201, 400, 403, 404, 409, 413, 500],
};
pub const DETACH: Route = Route {
    method: "POST",
    path: "/v1/networks/{name}/detach",
    statuses: &[200, 400, 403, 404, 413, 500],
};
pub const LIST_ENDPOINTS: Route = Route {
    method: "GET",
    path: "/v1/endpoints",
    statuses: &[200, 403],
};
pub const GET_ENDPOINT: Route = Route {
    method: "GET",
    path: "/v1/endpoints/{id}",
    statuses: &[200, 403, 404],
};
pub const DETACH_ENDPOINT: Route = Route {
    method: "DELETE",
    path: "/v1/endpoints/{id}",
    statuses: &[200, 400, 403, 404, 500],
};

pub const LIST_DOCKER: Route = Route {
    method: "GET",
    path: "/v1/docker",
    statuses: &[200, 403],
};
pub const REGISTER_DOCKER: Route = Route {
    method: "POST",
    path: "/v1/docker",
    statuses: &[200, 201, 400, 403, 409, 413, 500],
};
pub const GET_DOCKER: Route = Route {
    method: "GET",
    path: "/v1/docker/{name}",
    statuses: &[200, 403, 404],
};
pub const UNREGISTER_DOCKER: Route = Route {
    method: "DELETE",
    path: "/v1/docker/{name}",
    statuses: &[200, 403, 404, 500],
};

// Egress policies (issue 12), per network name.
pub const LIST_POLICIES: Route = Route {
    method: "GET",
    path: "/v1/policies",
    statuses: &[200, 403],
};
pub const GET_POLICY: Route = Route {
    method: "GET",
    path: "/v1/policies/{network}",
    statuses: &[200, 400, 403],
};
pub const SET_POLICY: Route = Route {
    method: "PUT",
    path: "/v1/policies/{network}",
    statuses: &[200, 400, 403, 413, 500],
};
pub const RESET_POLICY: Route = Route {
    method: "DELETE",
    path: "/v1/policies/{network}",
    statuses: &[200, 400, 403, 500],
};
pub const ADD_POLICY_RULES: Route = Route {
    method: "POST",
    path: "/v1/policies/{network}/rules",
    statuses: &[200, 400, 403, 413, 500],
};
pub const REMOVE_POLICY_RULES: Route = Route {
    method: "POST",
    path: "/v1/policies/{network}/rules/remove",
    statuses: &[200, 400, 403, 404, 413, 500],
};

// Published ports (issue 12).
pub const LIST_PORTS: Route = Route {
    method: "GET",
    path: "/v1/ports",
    statuses: &[200, 403],
};
pub const ADD_PORT: Route = Route {
    method: "POST",
    path: "/v1/ports",
    statuses: &[201, 400, 403, 404, 409, 413, 500],
};
pub const REMOVE_PORT: Route = Route {
    method: "DELETE",
    path: "/v1/ports/{id}",
    statuses: &[200, 400, 403, 404, 500],
};

/// The whole table, in the order the document lists it.
pub const ALL: &[Route] = &[
    STATUS,
    DOCTOR,
    LIST_NETWORKS,
    CREATE_NETWORK,
    GET_NETWORK,
    REMOVE_NETWORK,
    NETWORK_ENDPOINTS,
    ATTACH,
    DETACH,
    LIST_ENDPOINTS,
    GET_ENDPOINT,
    DETACH_ENDPOINT,
    LIST_DOCKER,
    REGISTER_DOCKER,
    GET_DOCKER,
    UNREGISTER_DOCKER,
    LIST_POLICIES,
    GET_POLICY,
    SET_POLICY,
    RESET_POLICY,
    ADD_POLICY_RULES,
    REMOVE_POLICY_RULES,
    LIST_PORTS,
    ADD_PORT,
    REMOVE_PORT,
    LIST_LABELLED,
];

/// Statuses that any route may answer with besides its own (routing,
/// transport and time-out errors).
pub const COMMON_STATUSES: &[u16] = &[404, 405, 408, 413];

// --- Containers attached by label (issue 11) ---

pub const LIST_LABELLED: Route = Route {
    method: "GET",
    path: "/v1/labelled-containers",
    statuses: &[200, 403],
};

/// The template of the route a concrete path belongs to (any method).
pub fn template_of(path: &str) -> Option<&'static str> {
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    ALL.iter().map(|r| r.path).find(|template| {
        let tsegs: Vec<&str> = template.split('/').collect();
        tsegs.len() == segs.len()
            && tsegs.iter().zip(&segs).all(|(t, s)| {
                if t.starts_with('{') {
                    !s.is_empty()
                } else {
                    t == s
                }
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_fill_and_encode_parameters() {
        assert_eq!(GET_NETWORK.url(&["web"]), "/v1/networks/web");
        assert_eq!(ATTACH.url(&["a.b_c-9"]), "/v1/networks/a.b_c-9/endpoints");
        assert_eq!(GET_ENDPOINT.url(&["a/b c"]), "/v1/endpoints/a%2Fb%20c");
        assert_eq!(
            REMOVE_NETWORK.url_with_query(&["n"], &[("force", "true")]),
            "/v1/networks/n?force=true"
        );
        assert_eq!(STATUS.url(&[]), "/v1/status");
    }

    #[test]
    fn templates_are_found_for_concrete_paths() {
        assert_eq!(template_of("/v1/networks/x/detach"), Some(DETACH.path));
        assert_eq!(template_of("/v1/networks/"), Some(LIST_NETWORKS.path));
        assert_eq!(template_of("/v2/networks"), None);
    }
}
