//! Docker's leftover bridges: dockerd does not delete docker0 (nor the
//! bridges of networks that still exist) when it stops, and inside gVisor a
//! later dockerd refuses a leftover bridge because gVisor reports no link
//! kind ("not a bridge"). `docker down` removes them.

use netns::Handle;

use crate::error::{Error, Result};

/// Delete the named links in this namespace if they are there; the names of
/// those removed.
pub async fn delete_bridges(names: &[String]) -> Result<Vec<String>> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let h = Handle::current().map_err(|e| Error::kernel("open a netlink connection", e))?;
    let mut removed = Vec::new();
    let mut failures = Vec::new();
    for name in names {
        match h.link_by_name(name).await {
            Ok(link) => match h.delete_link(link.index).await {
                Ok(()) => removed.push(name.clone()),
                Err(e) if e.is_not_found() => {}
                Err(e) => failures.push(Error::kernel(format!("delete bridge {name:?}"), e)),
            },
            Err(e) if e.is_not_found() => {}
            Err(e) => failures.push(Error::kernel(format!("look up bridge {name:?}"), e)),
        }
    }
    Error::collect("remove Docker's bridges", failures)?;
    Ok(removed)
}
