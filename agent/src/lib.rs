//! conductor-netd: networks, IPAM, endpoints and the services around them.
