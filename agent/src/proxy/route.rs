//! Which target a `*.localhost` request is for: `<port>.<name>.localhost`
//! or `<name>.localhost` (the name's single published or exposed port),
//! and the page listing what is routable when it is for nothing known.

use std::collections::BTreeMap;

/// The name and the port asked for by a Host (or `:authority`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub name: String,
    pub port: Option<u16>,
}

/// `8080.web.localhost:8000` -> web, 8080; `web.localhost` -> web. None
/// for hosts outside `.localhost`.
pub fn parse_host(host: &str) -> Option<Wanted> {
    let host = strip_port(host).to_ascii_lowercase();
    let host = host.strip_suffix('.').unwrap_or(&host);
    let labels = host.strip_suffix(".localhost")?;
    if labels.is_empty() {
        return None;
    }
    if let Some((first, rest)) = labels.split_once('.') {
        if !rest.is_empty() && first.bytes().all(|b| b.is_ascii_digit()) {
            let port = first.parse::<u16>().ok().filter(|p| *p > 0)?;
            return Some(Wanted {
                name: rest.to_string(),
                port: Some(port),
            });
        }
    }
    Some(Wanted {
        name: labels.to_string(),
        port: None,
    })
}

fn strip_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(']') => h,
        _ => host,
    }
}

/// Why a request is not routed, and what is.
pub struct NotRouted<'a> {
    pub reason: String,
    pub routable: &'a BTreeMap<String, Vec<u16>>,
    /// The proxy's own `host:port`, for the links.
    pub listener: &'a str,
}

impl NotRouted<'_> {
    pub fn json(&self) -> String {
        let names: Vec<serde_json::Value> = self
            .routable
            .iter()
            .map(|(n, p)| serde_json::json!({"name": n, "ports": p}))
            .collect();
        serde_json::json!({"error": self.reason, "routable": names}).to_string()
    }

    pub fn html(&self) -> String {
        let mut items = String::new();
        for (name, ports) in self.routable {
            let name = escape(name);
            if ports.is_empty() {
                items.push_str(&format!("<li>{name} (no published or exposed port: use http://PORT.{name}.localhost:{})</li>\n", escape(self.listener_port())));
            }
            for p in ports {
                let url = format!(
                    "http://{p}.{name}.localhost:{}/",
                    escape(self.listener_port())
                );
                items.push_str(&format!("<li><a href=\"{url}\">{url}</a></li>\n"));
            }
        }
        if items.is_empty() {
            items.push_str("<li>nothing yet: publish a port (conductor-netd port add) or start a container</li>\n");
        }
        format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>conductor-net: not found</title></head>\
             <body><h1>{}</h1><p>Routable here:</p><ul>\n{items}</ul></body></html>\n",
            escape(&self.reason)
        )
    }

    fn listener_port(&self) -> &str {
        self.listener.rsplit_once(':').map_or("", |(_, p)| p)
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_parse() {
        let w = |n: &str, p| {
            Some(Wanted {
                name: n.into(),
                port: p,
            })
        };
        assert_eq!(parse_host("8080.web.localhost:8000"), w("web", Some(8080)));
        assert_eq!(parse_host("web.localhost"), w("web", None));
        assert_eq!(parse_host("Web.LocalHost."), w("web", None));
        assert_eq!(parse_host("my.app.localhost"), w("my.app", None));
        assert_eq!(parse_host("99999.web.localhost"), None);
        assert_eq!(parse_host("localhost:8000"), None);
        assert_eq!(parse_host("example.com"), None);
    }

    #[test]
    fn the_page_lists_and_escapes() {
        let mut r = BTreeMap::new();
        r.insert("web".to_string(), vec![8080]);
        r.insert("<x>".to_string(), vec![]);
        let n = NotRouted {
            reason: "no target called \"nope\"".into(),
            routable: &r,
            listener: "127.0.0.1:8000",
        };
        let html = n.html();
        assert!(html.contains("http://8080.web.localhost:8000/"), "{html}");
        assert!(
            html.contains("&lt;x&gt;") && !html.contains("<x>"),
            "{html}"
        );
        let j: serde_json::Value = serde_json::from_str(&n.json()).unwrap();
        assert_eq!(j["routable"][1]["name"], "web");
    }
}
