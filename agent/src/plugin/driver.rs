//! The network driver (`docker network create -d conductor`): a Docker
//! network is a conductor network (made for it, or an existing one named
//! with `-o conductor.network=NAME`). On Join netd makes a veth pair with
//! one end on the network's bridge and hands Docker the other, which Docker
//! moves into the container (whose namespace does not exist yet at Join:
//! runc makes it later) and configures with the address its IPAM chose.

use ipnet::Ipv4Net;
use serde_json::{json, Value};

use super::protocol::{
    network_flag, network_option, CreateEndpointRequest, CreateNetworkRequest, EndpointRequest,
    JoinRequest, NetworkRequest, INTERNAL_OPTION, NETWORK_OPTION,
};
use super::state::{PluginEndpoint, PluginNetwork};
use super::Plugin;
use crate::api::types::CreateNetwork;
use crate::error::{Error, ErrorClass, Result};
use crate::ipam;
use crate::kernel::{DockerVeth, Kernel};
use crate::model::{format_mac, mac_for};

fn docker_id(what: &'static str, id: &str) -> Result<()> {
    if id.len() >= 12 && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(())
    } else {
        Err(Error::invalid(what, id, "not a Docker id"))
    }
}

fn address_of(what: &'static str, text: &str) -> Result<Ipv4Net> {
    text.parse()
        .map_err(|_| Error::invalid(what, text, "not an IPv4 address with its prefix"))
}

impl<K: Kernel> Plugin<K> {
    pub(super) async fn create_network(&self, req: CreateNetworkRequest) -> Result<Value> {
        docker_id("network id", &req.network_id)?;
        if let Some(v6) = req.ipv6_data.as_ref().and_then(|d| d.first()) {
            return Err(Error::invalid(
                "IPv6 pool",
                &v6.pool,
                "networks made through Docker's plugin are IPv4 only; make the network with \
                 `conductor-netd network create --ipv6-subnet` and use it with -o conductor.network=NAME",
            ));
        }
        let v4 = req
            .ipv4_data
            .as_ref()
            .and_then(|d| d.first())
            .ok_or_else(|| Error::invalid("IPv4Data", "[]", "Docker sent no IPv4 pool"))?;
        let subnet = ipam::parse_subnet_v4(&v4.pool)?;
        let gateway = v4.gateway.split('/').next().unwrap_or_default().to_string();
        let mut state = self.state.lock().await;
        if state.networks.contains_key(&req.network_id) {
            return Ok(json!({}));
        }
        let (name, created) = match network_option(&req.options, NETWORK_OPTION) {
            Some(name) => {
                let existing = self.svc.network(name)?;
                if existing.network.subnet != subnet {
                    return Err(Error::invalid(
                        "subnet",
                        subnet,
                        format!(
                            "the conductor network {name} has the subnet {}",
                            existing.network.subnet
                        ),
                    ));
                }
                (name.to_string(), false)
            }
            None => {
                let name = format!("docker-{}", &req.network_id[..12]);
                self.svc
                    .create_network(CreateNetwork {
                        name: name.clone(),
                        subnet: Some(subnet.to_string()),
                        gateway: (!gateway.is_empty()).then_some(gateway),
                        internal: network_flag(&req.options, INTERNAL_OPTION),
                        ..Default::default()
                    })
                    .await?;
                (name, true)
            }
        };
        state.networks.insert(
            req.network_id.clone(),
            PluginNetwork {
                name: name.clone(),
                created,
            },
        );
        if let Err(e) = state.save(&self.path).await {
            state.networks.remove(&req.network_id);
            if created {
                let _ = self.svc.remove_network(&name, true).await;
            }
            return Err(e);
        }
        tracing::info!(docker_network = %req.network_id, network = %name, created, "docker network");
        Ok(json!({}))
    }

    pub(super) async fn delete_network(&self, req: NetworkRequest) -> Result<Value> {
        let mut state = self.state.lock().await;
        let Some(net) = state.networks.get(&req.network_id).cloned() else {
            return Ok(json!({})); // already gone (or never ours): nothing to undo
        };
        if net.created {
            match self.svc.remove_network(&net.name, true).await {
                Ok(_) => {}
                Err(e) if e.class() == ErrorClass::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        state.networks.remove(&req.network_id);
        state
            .endpoints
            .retain(|_, ep| ep.network_id != req.network_id);
        state.save(&self.path).await?;
        Ok(json!({}))
    }

    pub(super) async fn create_endpoint(&self, req: CreateEndpointRequest) -> Result<Value> {
        docker_id("endpoint id", &req.endpoint_id)?;
        let iface = req.interface.unwrap_or_default();
        if !iface.address_ipv6.is_empty() {
            return Err(Error::invalid(
                "IPv6 address",
                &iface.address_ipv6,
                "endpoints made through Docker's plugin are IPv4 only",
            ));
        }
        if iface.address.is_empty() {
            return Err(Error::invalid(
                "endpoint address",
                "",
                "Docker's IPAM gave no IPv4 address",
            ));
        }
        let address = address_of("endpoint address", &iface.address)?;
        let mac = format_mac(&mac_for(address.addr()));
        if !iface.mac_address.is_empty() && !iface.mac_address.eq_ignore_ascii_case(&mac) {
            return Err(Error::invalid(
                "MAC address",
                &iface.mac_address,
                format!("conductor endpoints take the MAC of their address ({mac})"),
            ));
        }
        let mut state = self.state.lock().await;
        let net = state.network(&req.network_id)?.clone();
        let subnet = self.svc.network(&net.name)?.network.subnet;
        if !subnet.contains(&address.addr()) {
            return Err(Error::invalid(
                "endpoint address",
                address,
                format!("outside the network's subnet {subnet}"),
            ));
        }
        state.endpoints.insert(
            req.endpoint_id.clone(),
            PluginEndpoint {
                network_id: req.network_id.clone(),
                address,
                host_ifname: None,
            },
        );
        if let Err(e) = state.save(&self.path).await {
            state.endpoints.remove(&req.endpoint_id);
            return Err(e);
        }
        if iface.mac_address.is_empty() {
            Ok(json!({ "Interface": { "MacAddress": mac } }))
        } else {
            Ok(json!({}))
        }
    }

    pub(super) async fn delete_endpoint(&self, req: EndpointRequest) -> Result<Value> {
        let mut state = self.state.lock().await;
        let Some(ep) = state.endpoints.get(&req.endpoint_id).cloned() else {
            return Ok(json!({}));
        };
        if let Some(host) = &ep.host_ifname {
            self.svc.kernel().delete_link(host).await?;
        }
        state.endpoints.remove(&req.endpoint_id);
        state.save(&self.path).await?;
        Ok(json!({}))
    }

    pub(super) async fn join(&self, req: JoinRequest) -> Result<Value> {
        docker_id("endpoint id", &req.endpoint_id)?;
        let mut state = self.state.lock().await;
        let ep = state
            .endpoints
            .get(&req.endpoint_id)
            .cloned()
            .ok_or_else(|| Error::NotFound {
                what: "docker endpoint",
                name: req.endpoint_id.clone(),
            })?;
        let name = state.network(&req.network_id)?.name.clone();
        let network = self.svc.network(&name)?.network;
        let (host, peer) = veth_names(&req.endpoint_id);
        let veth = DockerVeth {
            host_ifname: host.clone(),
            peer_ifname: peer.clone(),
            bridge: network.bridge.clone(),
            mtu: network.mtu,
            mac: mac_for(ep.address.addr()),
        };
        if !self.svc.kernel().link_exists(&host)? {
            self.svc.kernel().create_docker_veth(&veth).await?;
        }
        if let Some(e) = state.endpoints.get_mut(&req.endpoint_id) {
            e.host_ifname = Some(host.clone());
        }
        if let Err(e) = state.save(&self.path).await {
            let _ = self.svc.kernel().delete_link(&host).await;
            return Err(e);
        }
        // Docker moves the peer into the container when it starts, names it
        // eth<N>, and sets its address, MAC and default route.
        let mut answer = json!({ "InterfaceName": { "SrcName": peer, "DstPrefix": "eth" } });
        if network.internal {
            answer["DisableGatewayService"] = json!(true);
        } else {
            answer["Gateway"] = json!(network.gateway.to_string());
        }
        Ok(answer)
    }

    pub(super) async fn leave(&self, req: EndpointRequest) -> Result<Value> {
        let mut state = self.state.lock().await;
        let Some(host) = state
            .endpoints
            .get(&req.endpoint_id)
            .and_then(|e| e.host_ifname.clone())
        else {
            return Ok(json!({}));
        };
        // Docker has moved the peer back here (or its namespace is gone):
        // deleting the host end deletes both.
        self.svc.kernel().delete_link(&host).await?;
        if let Some(e) = state.endpoints.get_mut(&req.endpoint_id) {
            e.host_ifname = None;
        }
        state.save(&self.path).await?;
        Ok(json!({}))
    }
}

/// Host and peer names of an endpoint's veth, from Docker's endpoint id:
/// `cp`/`cq` + 10 hex digits (outside netd's own `cn` prefix, so netd's
/// start-up reconciliation leaves them to the plugin).
fn veth_names(endpoint_id: &str) -> (String, String) {
    let tag = &endpoint_id[..10];
    (format!("cp{tag}"), format!("cq{tag}"))
}
