//! A netlink handle bound to one network namespace, and batches of requests
//! that share one `sendmsg`.

use netlink_packet_route::RouteNetlinkMessage;
use tokio::sync::Mutex;

use crate::connection::{open_socket, Connection, Reply, Request};
use crate::error::{errno_of, Error, Result};
use crate::namespace::Netns;

/// One request with what to call it in an error.
#[derive(Debug, Clone)]
pub(crate) struct Op {
    pub request: Request,
    pub op: &'static str,
    pub object: String,
}

impl Op {
    pub fn ack(message: RouteNetlinkMessage, flags: u16, op: &'static str, object: String) -> Self {
        Op {
            request: Request::ack(message, flags),
            op,
            object,
        }
    }

    pub fn dump(message: RouteNetlinkMessage, op: &'static str, object: String) -> Self {
        Op {
            request: Request::dump(message),
            op,
            object,
        }
    }

    fn check(&self, reply: Reply) -> Result<Vec<RouteNetlinkMessage>> {
        reply.map_err(|errno| Error::Netlink {
            op: self.op,
            object: self.object.clone(),
            errno,
        })
    }
}

/// A netlink route connection whose socket lives in one namespace. The
/// socket is opened on a thread that entered the namespace and then driven
/// by tokio on any worker: a socket keeps the namespace it was created in.
pub struct Handle {
    conn: Mutex<Connection>,
    namespace: String,
}

impl Handle {
    /// A handle in the calling thread's namespace. Needs a tokio runtime.
    pub fn current() -> Result<Handle> {
        let socket = open_socket()
            .map_err(|e| Error::os("open netlink socket", "current namespace", errno_of(&e)))?;
        Self::from_socket(socket, "current namespace".to_string())
    }

    /// A handle whose socket lives in `ns`. Needs a tokio runtime.
    pub fn open(ns: &Netns) -> Result<Handle> {
        let socket = ns
            .run(open_socket)?
            .map_err(|e| Error::os("open netlink socket in", ns.describe(), errno_of(&e)))?;
        Self::from_socket(socket, ns.describe())
    }

    fn from_socket(socket: netlink_sys::Socket, namespace: String) -> Result<Handle> {
        let conn = Connection::new(socket).map_err(|e| {
            Error::os(
                "register netlink socket of",
                namespace.clone(),
                errno_of(&e),
            )
        })?;
        Ok(Handle {
            conn: Mutex::new(conn),
            namespace,
        })
    }

    /// Which namespace this handle speaks to, for messages.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Start a batch: requests queued on it go out in one `sendmsg`.
    pub fn batch(&self) -> Batch<'_> {
        Batch {
            handle: self,
            ops: Vec::new(),
        }
    }

    /// Run ops in one round trip; one result per op, in order.
    pub(crate) async fn run_all(
        &self,
        ops: &[Op],
    ) -> Result<Vec<Result<Vec<RouteNetlinkMessage>>>> {
        let requests: Vec<Request> = ops.iter().map(|o| o.request.clone()).collect();
        let replies = {
            let mut conn = self.conn.lock().await;
            conn.execute(&requests).await
        }
        .map_err(|e| {
            Error::os(
                "netlink round trip in",
                self.namespace.clone(),
                errno_of(&e),
            )
        })?;
        Ok(ops
            .iter()
            .zip(replies)
            .map(|(op, reply)| op.check(reply))
            .collect())
    }

    /// Run two ops in one round trip (e.g. a create and the read-back of
    /// what it made); both results, in order.
    pub(crate) async fn run_pair(
        &self,
        first: Op,
        second: Op,
    ) -> Result<(
        Result<Vec<RouteNetlinkMessage>>,
        Result<Vec<RouteNetlinkMessage>>,
    )> {
        let mut results = self.run_all(&[first, second]).await?.into_iter();
        match (results.next(), results.next()) {
            (Some(a), Some(b)) => Ok((a, b)),
            _ => Err(Error::protocol(
                "batch in",
                self.namespace.clone(),
                "missing reply",
            )),
        }
    }

    /// Run one op; its reply messages on success.
    pub(crate) async fn run(&self, op: Op) -> Result<Vec<RouteNetlinkMessage>> {
        self.run_all(std::slice::from_ref(&op))
            .await?
            .pop()
            .unwrap_or_else(|| Err(Error::protocol(op.op, op.object.clone(), "no reply")))
    }
}

/// Requests that go to the kernel in one `sendmsg`. The kernel processes them
/// in order and acks each; `commit` reports the first failure.
pub struct Batch<'h> {
    handle: &'h Handle,
    ops: Vec<Op>,
}

impl Batch<'_> {
    pub(crate) fn push(mut self, op: Op) -> Self {
        self.ops.push(op);
        self
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Send everything; Ok only if every request succeeded.
    pub async fn commit(self) -> Result<()> {
        for result in self.handle.run_all(&self.ops).await? {
            result?;
        }
        Ok(())
    }
}
