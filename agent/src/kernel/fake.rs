//! An in-memory kernel for tests and for running the daemon without
//! privileges (`serve --fake-kernel`): the API, state and IPAM are real,
//! links are entries in a map.
//!
//! Targets resolve like this: a netns NAME exists when the file
//! `NETNS_DIR/NAME` exists; a netns PATH exists when the file exists; a PID
//! exists when `/proc/PID` does. The namespace's identity is the file's
//! (device, inode), so tests can make and remove "namespaces" with plain files.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Mutex;

use ipnet::IpNet;
use nix::errno::Errno;

use super::{BridgeInfo, EndpointPlan, Kernel};
use crate::error::{Error, Result};
use crate::model::{Network, NsId, Target};

#[derive(Debug, Clone)]
pub struct FakeLink {
    pub bridge: bool,
    pub master: Option<String>,
    /// For an endpoint's host end: (namespace, inner name, addresses).
    pub inner: Option<(NsId, String, Vec<IpNet>)>,
}

#[derive(Default)]
struct Inner {
    links: HashMap<String, FakeLink>,
    routes: Vec<IpNet>,
    fail: HashMap<&'static str, usize>,
    calls: HashMap<&'static str, usize>,
}

pub struct FakeKernel {
    netns_dir: PathBuf,
    inner: Mutex<Inner>,
}

fn netlink_error(op: &'static str, object: &str, errno: Errno) -> netns::Error {
    netns::Error::Netlink {
        op,
        object: object.to_string(),
        errno,
    }
}

impl FakeKernel {
    pub fn new(netns_dir: impl Into<PathBuf>) -> FakeKernel {
        FakeKernel {
            netns_dir: netns_dir.into(),
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Make the next `times` calls of `op` fail ("create_endpoint",
    /// "ensure_bridge", "delete_link").
    pub fn fail(&self, op: &'static str, times: usize) {
        self.lock().fail.insert(op, times);
    }

    /// Add a route to the "daemon namespace" (automatic subnets avoid it).
    pub fn add_route(&self, net: IpNet) {
        self.lock().routes.push(net);
    }

    /// Add a plain link as if someone else had made it.
    pub fn add_link(&self, name: &str) {
        self.lock().links.insert(
            name.to_string(),
            FakeLink {
                bridge: false,
                master: None,
                inner: None,
            },
        );
    }

    /// Remove a link as if someone else had (`ip link del`).
    pub fn remove_link(&self, name: &str) -> bool {
        self.lock().links.remove(name).is_some()
    }

    pub fn links(&self) -> HashMap<String, FakeLink> {
        self.lock().links.clone()
    }

    pub fn calls(&self, op: &'static str) -> usize {
        self.lock().calls.get(op).copied().unwrap_or(0)
    }

    fn enter(&self, op: &'static str, object: &str) -> Result<()> {
        let mut inner = self.lock();
        *inner.calls.entry(op).or_insert(0) += 1;
        if let Some(n) = inner.fail.get_mut(op) {
            if *n > 0 {
                *n -= 1;
                return Err(Error::kernel(
                    format!("{op} {object} (injected failure)"),
                    netlink_error(op, object, Errno::EIO),
                ));
            }
        }
        Ok(())
    }
}

/// A fake namespace: only its identity.
#[derive(Debug, Clone, Copy)]
pub struct FakeNs(pub NsId);

impl Kernel for FakeKernel {
    type Ns = FakeNs;

    fn open(&self, target: &Target) -> Result<(FakeNs, NsId)> {
        let (path, what, name) = match target {
            Target::Netns(n) => (self.netns_dir.join(n), "netns", n.clone()),
            Target::NetnsPath(p) => (p.clone(), "netns path", p.display().to_string()),
            Target::Pid(p) => (PathBuf::from(format!("/proc/{p}")), "pid", p.to_string()),
        };
        let meta = std::fs::metadata(&path).map_err(|_| Error::not_found(what, name))?;
        let id = NsId {
            dev: meta.dev(),
            ino: meta.ino(),
        };
        Ok((FakeNs(id), id))
    }

    async fn used_networks(&self) -> Result<Vec<IpNet>> {
        Ok(self.lock().routes.clone())
    }

    async fn ensure_bridge(&self, network: &Network) -> Result<BridgeInfo> {
        self.enter("ensure_bridge", &network.bridge)?;
        let mut inner = self.lock();
        let created = !inner.links.contains_key(&network.bridge);
        if let Some(l) = inner.links.get(&network.bridge) {
            if !l.bridge {
                return Err(Error::kernel(
                    format!("create bridge {:?}", network.bridge),
                    netlink_error("create bridge", &network.bridge, Errno::EEXIST),
                ));
            }
        }
        inner.links.insert(
            network.bridge.clone(),
            FakeLink {
                bridge: true,
                master: None,
                inner: None,
            },
        );
        let index = inner.links.len() as u32 + 1;
        Ok(BridgeInfo { index, created })
    }

    async fn delete_link(&self, name: &str) -> Result<bool> {
        self.enter("delete_link", name)?;
        Ok(self.lock().links.remove(name).is_some())
    }

    async fn create_endpoint(&self, ns: &FakeNs, plan: &EndpointPlan) -> Result<()> {
        self.enter("create_endpoint", &plan.host_ifname)?;
        let mut inner = self.lock();
        if !inner.links.get(&plan.bridge).is_some_and(|l| l.bridge) {
            return Err(Error::Conflict(format!(
                "bridge {:?} is missing",
                plan.bridge
            )));
        }
        let clash = inner.links.contains_key(&plan.host_ifname)
            || inner.links.values().any(|l| {
                l.inner
                    .as_ref()
                    .is_some_and(|(id, name, _)| *id == ns.0 && *name == plan.ifname)
            });
        if clash {
            return Err(Error::kernel(
                format!("create endpoint {}", plan.host_ifname),
                netlink_error("create veth", &plan.host_ifname, Errno::EEXIST),
            ));
        }
        inner.links.insert(
            plan.host_ifname.clone(),
            FakeLink {
                bridge: false,
                master: Some(plan.bridge.clone()),
                inner: Some((ns.0, plan.ifname.clone(), plan.addresses.clone())),
            },
        );
        Ok(())
    }

    async fn link_names(&self) -> Result<Vec<String>> {
        Ok(self.lock().links.keys().cloned().collect())
    }

    async fn endpoint_present(&self, ns: &FakeNs, ifname: &str, address: IpNet) -> Result<bool> {
        Ok(self.lock().links.values().any(|l| {
            l.inner.as_ref().is_some_and(|(id, name, addrs)| {
                *id == ns.0 && name == ifname && addrs.iter().any(|a| a.addr() == address.addr())
            })
        }))
    }

    async fn set_master(&self, link: &str, bridge: &str) -> Result<()> {
        let mut inner = self.lock();
        match inner.links.get_mut(link) {
            Some(l) => {
                l.master = Some(bridge.to_string());
                Ok(())
            }
            None => Err(Error::kernel(
                format!("attach {link:?} to its bridge"),
                netlink_error("set master", link, Errno::ENODEV),
            )),
        }
    }

    fn environment(&self) -> String {
        "fake".to_string()
    }
}
