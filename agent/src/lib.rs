//! conductor-netd: networks, IPAM, endpoints, persistent state, the
//! unix-socket API, the CLI and `doctor`.
//!
//! Data flows one way: CLI / API request -> [`service::Service`] ->
//! [`kernel::Kernel`] (implemented over the `netns` crate by
//! [`real::NetnsKernel`], in memory by [`fake::FakeKernel`]) -> kernel.

pub mod api;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod doctor;
pub mod egress;
pub mod error;
pub mod fake;
pub mod ipam;
pub mod kernel;
pub mod model;
pub mod platform;
pub mod preload_setup;
pub mod privileges;
pub mod real;
pub mod service;
pub mod state;

pub use error::{Error, Result};
