//! Docker's remote network-driver and IPAM-driver protocols (libnetwork's
//! `remote` and `ipams/remote` packages): JSON over HTTP POST on a unix
//! socket, PascalCase fields, `{"Err": "..."}` on failure.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Media type of every answer (the plugin protocol's version 1.2).
pub const MEDIA_TYPE: &str = "application/vnd.docker.plugins.v1.2+json";

/// Option keys Docker passes to CreateNetwork.
pub const GENERIC_OPTIONS: &str = "com.docker.network.generic";
pub const INTERNAL_OPTION: &str = "com.docker.network.internal";
/// `-o conductor.network=NAME` (network create) or `--ipam-opt`: use the
/// conductor network of that name instead of making one.
pub const NETWORK_OPTION: &str = "conductor.network";
/// RequestAddress's option for the gateway's address.
pub const ADDRESS_TYPE_OPTION: &str = "RequestAddressType";
pub const GATEWAY_ADDRESS_TYPE: &str = "com.docker.network.gateway";

#[derive(Debug, Clone, Default, Deserialize)]
pub struct IpamData {
    #[serde(rename = "Pool", default)]
    pub pool: String,
    #[serde(rename = "Gateway", default)]
    pub gateway: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CreateNetworkRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "Options", default)]
    pub options: Option<BTreeMap<String, Value>>,
    #[serde(rename = "IPv4Data", default)]
    pub ipv4_data: Option<Vec<IpamData>>,
    #[serde(rename = "IPv6Data", default)]
    pub ipv6_data: Option<Vec<IpamData>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct NetworkRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct EndpointInterface {
    #[serde(rename = "Address", default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    #[serde(
        rename = "AddressIPv6",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub address_ipv6: String,
    #[serde(
        rename = "MacAddress",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub mac_address: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CreateEndpointRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(rename = "Interface", default)]
    pub interface: Option<EndpointInterface>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EndpointRequest {
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct JoinRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RequestPoolRequest {
    #[serde(rename = "Pool", default)]
    pub pool: String,
    #[serde(rename = "SubPool", default)]
    pub sub_pool: String,
    #[serde(rename = "Options", default)]
    pub options: Option<BTreeMap<String, String>>,
    #[serde(rename = "V6", default)]
    pub v6: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ReleasePoolRequest {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RequestAddressRequest {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    #[serde(rename = "Address", default)]
    pub address: String,
    #[serde(rename = "Options", default)]
    pub options: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ReleaseAddressRequest {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    #[serde(rename = "Address")]
    pub address: String,
}

/// A string option of CreateNetwork, from `-o` (generic options) first.
pub fn network_option<'a>(
    options: &'a Option<BTreeMap<String, Value>>,
    key: &str,
) -> Option<&'a str> {
    let options = options.as_ref()?;
    options
        .get(GENERIC_OPTIONS)
        .and_then(|g| g.get(key))
        .or_else(|| options.get(key))
        .and_then(Value::as_str)
}

/// A boolean option of CreateNetwork (Docker sends `true` or `"true"`).
pub fn network_flag(options: &Option<BTreeMap<String, Value>>, key: &str) -> bool {
    match options.as_ref().and_then(|o| o.get(key)) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        _ => false,
    }
}
