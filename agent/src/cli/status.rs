//! `conductor-netd status`.

use super::{print_json, Result};
use crate::api::Client;
use crate::render;

pub async fn run(client: &Client, json: bool) -> Result<()> {
    let status = client.status().await?;
    let labelled = client.labelled_containers().await?;
    if json {
        let mut value = serde_json::to_value(&status)
            .map_err(|e| crate::error::Error::Internal(format!("encode output: {e}")))?;
        if let Some(o) = value.as_object_mut() {
            o.insert("labelled_containers".into(), serde_json::json!(labelled));
        }
        return print_json(&value);
    }
    print!("{}", render::status_tree(&status));
    if !labelled.is_empty() {
        println!("containers labelled conductor.network:");
    }
    for c in &labelled {
        match (&c.address, &c.problem) {
            (Some(a), _) => println!("  {} -> {} ({a})", c.name, c.network),
            (_, Some(p)) => println!("  {} -> {}: {p}", c.name, c.network),
            _ => println!("  {} -> {}", c.name, c.network),
        }
    }
    Ok(())
}
