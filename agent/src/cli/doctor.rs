//! `conductor-netd doctor` (no daemon needed).

use super::{print_json, Result};

pub fn run(json: bool) -> Result<()> {
    let report = crate::doctor::run();
    if json {
        return print_json(&report);
    }
    print!("{}", report.table());
    Ok(())
}
