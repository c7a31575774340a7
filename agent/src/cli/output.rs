//! Human-readable output: tables and the status tree.

use crate::model::{AttachResponse, EndpointView, NetworkView, Status};

/// Left-aligned columns, two spaces apart.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.len());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{:<w$}  ", c, w = widths[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

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
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = table(
            &["A", "BB"],
            &[
                vec!["xyz".into(), "1".into()],
                vec!["q".into(), "22".into()],
            ],
        );
        assert_eq!(t, "A    BB\nxyz  1\nq    22\n");
    }
}
