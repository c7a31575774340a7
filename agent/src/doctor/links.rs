//! Links, addresses, routes and sysctls, made inside two throwaway
//! namespaces with the netns crate (what conductor-netd itself needs).

use ipnet::IpNet;
use netns::{Handle, Netns, Route, VethSpec};

use super::{CheckId, Checks, Outcome};

/// This probe's rows, in order (skipped as a block when it cannot run).
pub(super) const CHECKS: [CheckId; 7] = [
    CheckId::Bridge,
    CheckId::Veth,
    CheckId::MoveByFd,
    CheckId::Addresses,
    CheckId::Routes,
    CheckId::RouteDelete,
    CheckId::Sysctl,
];

pub(super) async fn probe(c: &mut Checks, a: &Netns, b: &Netns) {
    let skip_rest = |c: &mut Checks, from: usize, why: &str| c.skip(&CHECKS[from..], why);
    let (ha, hb) = match (Handle::open(a), Handle::open(b)) {
        (Ok(ha), Ok(hb)) => (ha, hb),
        (Err(e), _) | (_, Err(e)) => {
            skip_rest(c, 0, &format!("no netlink handle: {e}"));
            return;
        }
    };
    let bridge = match ha.ensure_bridge("cnd-br0", None).await {
        Ok(l) => {
            c.add(
                CheckId::Bridge,
                Outcome::Ok,
                format!("created cnd-br0 (#{})", l.index),
            );
            l
        }
        Err(e) => {
            c.add(CheckId::Bridge, Outcome::Fail, e.to_string());
            skip_rest(c, 1, "needs a bridge");
            return;
        }
    };
    let veth = ha
        .create_veth(&VethSpec {
            name: "cnd-v0",
            peer_name: "cnd-p0",
            peer_ns: b,
            master: Some(bridge.index),
            mtu: None,
            peer_mac: None,
            up: true,
        })
        .await;
    let peer = match veth {
        Ok(_) => {
            c.add(
                CheckId::Veth,
                Outcome::Ok,
                "created, host end attached to the bridge",
            );
            match hb.link_by_name("cnd-p0").await {
                Ok(p) => {
                    c.add(
                        CheckId::MoveByFd,
                        Outcome::Ok,
                        "peer created inside the other namespace",
                    );
                    Some(p)
                }
                Err(e) => {
                    c.add(
                        CheckId::MoveByFd,
                        Outcome::Fail,
                        format!("peer not found in the target namespace: {e}"),
                    );
                    None
                }
            }
        }
        Err(e) => {
            c.add(CheckId::Veth, Outcome::Fail, e.to_string());
            c.add(CheckId::MoveByFd, Outcome::Skip, "needs a veth pair");
            None
        }
    };
    let gw: IpNet = "10.255.0.1/24".parse().expect("constant");
    let addr = async {
        ha.add_address(bridge.index, gw).await?;
        let found = ha.addresses(Some(bridge.index)).await?;
        if found.iter().any(|x| x.address == gw) {
            Ok("added and read back".to_string())
        } else {
            Err(netns::Error::InvalidInput {
                what: "address",
                value: gw.to_string(),
                reason: "added but not listed".into(),
            })
        }
    }
    .await;
    let have_addr = c.result(CheckId::Addresses, addr);
    let on_link = Route::on_link("10.254.0.0/24".parse().expect("constant"), bridge.index);
    let routes = async {
        ha.add_route(&on_link).await?;
        let mut detail = "on-link route added and listed".to_string();
        if !ha
            .routes(false)
            .await?
            .iter()
            .any(|r| r.destination == on_link.destination)
        {
            detail = "on-link route added but not listed".into();
        }
        if let (Some(p), true) = (&peer, have_addr) {
            hb.set_up(p.index, true).await?;
            hb.add_address(p.index, "10.255.0.2/24".parse().expect("constant"))
                .await?;
            hb.add_route(&Route::default_via("10.255.0.1".parse().expect("constant")))
                .await?;
            detail.push_str("; default route via a gateway added");
        }
        Ok::<_, netns::Error>(detail)
    }
    .await;
    let have_routes = c.result(CheckId::Routes, routes);
    if have_routes {
        match ha.delete_route(&on_link).await {
            Ok(()) => c.add(CheckId::RouteDelete, Outcome::Ok, "RTM_DELROUTE works"),
            Err(e) => c.add(
                CheckId::RouteDelete,
                Outcome::Fail,
                format!("{e} (routes go away with their link or namespace)"),
            ),
        }
    } else {
        c.add(CheckId::RouteDelete, Outcome::Skip, "needs routes");
    }
    let sysctl = netns::read_sysctl(a, "net.ipv4.ip_forward")
        .and_then(|v| netns::write_sysctl(a, "net.ipv4.ip_forward", "1").map(|_| v));
    c.result(
        CheckId::Sysctl,
        sysctl.map(|v| format!("read ({v}) and written inside a namespace")),
    );
}
