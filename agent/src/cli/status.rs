//! `conductor-netd status`.

use super::{print_json, Result};
use crate::api::Client;
use crate::render;

pub async fn run(client: &Client, json: bool) -> Result<()> {
    let status = client.status().await?;
    if json {
        return print_json(&status);
    }
    print!("{}", render::status_tree(&status));
    Ok(())
}
