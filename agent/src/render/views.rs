//! The API's answers for people: tables and the status tree.

use super::table;
use crate::api::types::{AttachResponse, DockerEngineView, EndpointView, NetworkView, Status};

pub fn networks_table(nets: &[NetworkView]) -> String {
    let rows: Vec<Vec<String>> = nets
        .iter()
        .map(|n| {
            vec![
                n.network.name.clone(),
                n.network.bridge.clone(),
                n.network.subnet.to_string(),
                n.network.gateway.to_string(),
                n.network.mtu.to_string(),
                n.endpoints.to_string(),
            ]
        })
        .collect();
    table(
        &["NAME", "BRIDGE", "SUBNET", "GATEWAY", "MTU", "ENDPOINTS"],
        &rows,
    )
}

pub fn endpoints_table(eps: &[EndpointView]) -> String {
    let rows: Vec<Vec<String>> = eps
        .iter()
        .map(|e| {
            vec![
                e.endpoint.id.clone(),
                e.endpoint.network.clone(),
                e.endpoint.target.describe(),
                e.endpoint.ifname.clone(),
                e.endpoint.ipv4.to_string(),
                format!("{:?}", e.state).to_lowercase(),
            ]
        })
        .collect();
    table(
        &["ID", "NETWORK", "TARGET", "IFNAME", "ADDRESS", "STATE"],
        &rows,
    )
}

pub fn network_detail(net: &NetworkView, eps: &[EndpointView]) -> String {
    let n = &net.network;
    let mut s = format!(
        "name:      {}\nbridge:    {}\nsubnet:    {}\ngateway:   {}\nmtu:       {}\n",
        n.name, n.bridge, n.subnet, n.gateway, n.mtu
    );
    if let (Some(s6), Some(g6)) = (n.ipv6_subnet, n.ipv6_gateway) {
        s.push_str(&format!("ipv6:      {s6} (gateway {g6})\n"));
    }
    s.push_str(&format!("endpoints: {}\n", net.endpoints));
    if !eps.is_empty() {
        s.push('\n');
        s.push_str(&endpoints_table(eps));
    }
    s
}

pub fn attach_line(r: &AttachResponse) -> String {
    let e = &r.endpoint.endpoint;
    let gw = r
        .endpoint
        .result
        .ips
        .first()
        .map(|ip| format!(" gateway {}", ip.gateway))
        .unwrap_or_default();
    format!(
        "{} {} to {}: {} {}{} (endpoint {})",
        if r.created {
            "attached"
        } else {
            "already attached:"
        },
        e.target.describe(),
        e.network,
        e.ifname,
        e.ipv4,
        gw,
        e.id
    )
}

/// network -> bridge -> endpoints -> namespace / pid / address
pub fn status_tree(s: &Status) -> String {
    let mut out = format!(
        "conductor-netd {} (pid {}, up {}s, {})\nsocket {}  state {}\n",
        s.version, s.pid, s.uptime_secs, s.environment, s.socket, s.state_dir
    );
    if s.networks.is_empty() {
        out.push_str("no networks\n");
    }
    for n in &s.networks {
        out.push_str(&format!(
            "\nnetwork {} ({}, gateway {})\n",
            n.name, n.subnet, n.gateway
        ));
        out.push_str(&format!("└── bridge {}\n", n.bridge));
        if n.endpoints.is_empty() {
            out.push_str("    (no endpoints)\n");
        }
        let count = n.endpoints.len();
        for (i, e) in n.endpoints.iter().enumerate() {
            let last = i + 1 == count;
            out.push_str(&format!(
                "    {} {} {}: {} {}{}\n",
                if last { "└──" } else { "├──" },
                e.id,
                e.target,
                e.ifname,
                e.address,
                match e.state {
                    crate::model::EndpointState::Attached => String::new(),
                    other => format!(" ({other:?})").to_lowercase(),
                }
            ));
        }
    }
    for b in &s.unmanaged_bridges {
        out.push_str(&format!(
            "
unmanaged bridge in our prefix: {} ({})
    fix: {}
",
            b.bridge,
            if b.addresses.is_empty() {
                "no addresses".to_string()
            } else {
                b.addresses.join(", ")
            },
            b.fix
        ));
    }
    out
}

/// engine -> networks (bridge, subnet, egress, containers)
pub fn docker_engines(engines: &[DockerEngineView]) -> String {
    if engines.is_empty() {
        return "conductor-netd serves no Docker daemon (see `conductor-netd docker up`)\n".into();
    }
    let mut out = String::new();
    for e in engines {
        out.push_str(&format!(
            "docker {} at {} ({}{}; names: {}, egress: {}, {} DNS listener(s))\n",
            e.request.name,
            e.request.socket.display(),
            if e.connected {
                "connected"
            } else {
                "not connected"
            },
            e.docker_version
                .as_ref()
                .map(|v| format!(", version {v}"))
                .or_else(|| e.error.as_ref().map(|err| format!(": {err}")))
                .unwrap_or_default(),
            if e.request.dns { "yes" } else { "no" },
            if e.request.egress { "yes" } else { "no" },
            e.dns_listeners
        ));
        let rows: Vec<Vec<String>> = e
            .networks
            .iter()
            .map(|n| {
                vec![
                    n.name.clone(),
                    n.driver.clone(),
                    n.bridge.clone().unwrap_or_default(),
                    n.subnet.clone().unwrap_or_default(),
                    n.egress.clone(),
                    n.containers.join(","),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "NETWORK",
                "DRIVER",
                "BRIDGE",
                "SUBNET",
                "EGRESS",
                "CONTAINERS",
            ],
            &rows,
        ));
    }
    out
}
