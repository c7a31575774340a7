//! A small HTTP/1.1 client for the API over its unix socket.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::UnixStream;

use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

/// A raw answer: status and body bytes.
#[derive(Debug, Clone)]
pub struct RawReply {
    pub status: u16,
    pub body: Bytes,
}

impl Client {
    pub fn new(socket: impl Into<PathBuf>) -> Client {
        Client {
            socket: socket.into(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    async fn connect(&self) -> Result<UnixStream> {
        UnixStream::connect(&self.socket).await.map_err(|e| {
            let why = match e.kind() {
                std::io::ErrorKind::NotFound => {
                    "no socket there (is the daemon running? use --socket or CONDUCTOR_NETD_SOCKET)"
                        .to_string()
                }
                std::io::ErrorKind::ConnectionRefused => {
                    "connection refused (stale socket: the daemon is not running)".to_string()
                }
                std::io::ErrorKind::PermissionDenied => {
                    "permission denied (only root and the socket's group may connect)".to_string()
                }
                _ => e.to_string(),
            };
            Error::Client(format!(
                "cannot reach conductor-netd at {}: {why}",
                self.socket.display()
            ))
        })
    }

    /// Send one request and return the raw answer.
    pub async fn raw(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> Result<RawReply> {
        let stream = self.connect().await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Error::Client(format!("HTTP handshake: {e}")))?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "conductor-netd");
        if body.is_some() {
            builder = builder.header("content-type", "application/json");
        }
        let req = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| Error::Client(format!("build request: {e}")))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| Error::Client(format!("{method} {path}: {e}")))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| Error::Client(format!("{method} {path}: reading the answer: {e}")))?
            .to_bytes();
        driver.abort();
        Ok(RawReply { status, body })
    }

    /// Send a request with an optional JSON body; decode a JSON answer or
    /// turn an error answer into an `Error::Api`.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<(u16, T)> {
        let bytes = match body {
            Some(b) => Some(
                serde_json::to_vec(b)
                    .map_err(|e| Error::Internal(format!("encode request: {e}")))?,
            ),
            None => None,
        };
        let reply = self.raw(method, path, bytes).await?;
        if reply.status >= 400 {
            let v: serde_json::Value = serde_json::from_slice(&reply.body).unwrap_or_default();
            let code = v["error"]["code"].as_str().unwrap_or("unknown");
            let message = v["error"]["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| String::from_utf8_lossy(&reply.body).to_string());
            return Err(Error::from_api(reply.status, code, &message));
        }
        let value = serde_json::from_slice(&reply.body).map_err(|e| {
            Error::Client(format!(
                "{method} {path}: unexpected answer ({e}): {}",
                String::from_utf8_lossy(&reply.body)
            ))
        })?;
        Ok((reply.status, value))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        Ok(self.call::<T>("GET", path, None::<&()>).await?.1)
    }
}
