//! `conductor-netd api METHOD PATH`: one raw request, for debugging.

use std::path::PathBuf;

use clap::Args;

use super::Result;
use crate::api::{Client, ClientError};
use crate::error::Error;

#[derive(Debug, Args)]
pub struct ApiArgs {
    /// GET, POST, DELETE, ...
    pub method: String,
    /// e.g. /v1/status
    pub path: String,
    /// Request body.
    #[arg(long, conflicts_with = "data_file")]
    pub data: Option<String>,
    /// Request body from a file ("-" for stdin).
    #[arg(long, value_name = "FILE")]
    pub data_file: Option<PathBuf>,
}

pub async fn run(client: &Client, args: ApiArgs) -> Result<()> {
    let body = match (args.data, args.data_file) {
        (Some(d), _) => Some(d.into_bytes()),
        (None, Some(f)) if f.as_os_str() == "-" => {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
                .map_err(|e| Error::invalid("data file", "-", format!("read stdin: {e}")))?;
            Some(buf)
        }
        (None, Some(f)) => Some(
            std::fs::read(&f)
                .map_err(|e| Error::invalid("data file", f.display(), e.to_string()))?,
        ),
        (None, None) => None,
    };
    let reply = client
        .raw(&args.method.to_uppercase(), &args.path, body)
        .await?;
    println!("{}", String::from_utf8_lossy(&reply.body));
    if reply.status >= 400 {
        return Err(ClientError::Api {
            status: reply.status,
            code: "http".into(),
            message: format!("HTTP {}", reply.status),
        }
        .into());
    }
    Ok(())
}
