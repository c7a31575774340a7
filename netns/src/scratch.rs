//! Throwaway named namespaces for probes, demos, benchmarks and tests:
//! created under one prefix and deleted when the guard is dropped, even when
//! the caller fails half-way.

use crate::error::Result;
use crate::namespace::Netns;

/// Named namespaces `PREFIX-SUFFIX`, deleted on drop.
#[derive(Debug)]
pub struct ScratchNamespaces {
    prefix: String,
    names: Vec<String>,
}

impl ScratchNamespaces {
    /// A guard for namespaces named `prefix-*`. Nothing is created yet.
    pub fn new(prefix: impl Into<String>) -> ScratchNamespaces {
        ScratchNamespaces {
            prefix: prefix.into(),
            names: Vec::new(),
        }
    }

    /// Create `PREFIX-suffix` and remember it for deletion.
    pub fn create(&mut self, suffix: &str) -> Result<Netns> {
        let name = self.name(suffix);
        let ns = Netns::create(&name)?;
        self.names.push(name);
        Ok(ns)
    }

    /// The full name a suffix gets.
    pub fn name(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.prefix)
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Names created so far, in order.
    pub fn names(&self) -> &[String] {
        &self.names
    }
}

impl Drop for ScratchNamespaces {
    fn drop(&mut self) {
        for name in self.names.drain(..).rev() {
            if let Err(e) = Netns::delete(&name) {
                tracing::warn!(error = %e, "could not delete scratch namespace {name}");
            }
        }
    }
}
