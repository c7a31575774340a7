//! conductor-netd: networks, IPAM, endpoints, persistent state, the
//! unix-socket API, the CLI and `doctor`.
//!
//! Data flows one way: CLI / API request -> [`service::Service`] ->
//! [`kernel::Kernel`] (over the `netns` crate by [`kernel::NetnsKernel`],
//! in memory by `kernel::fake::FakeKernel` in tests) -> kernel. Where each
//! part lives, and where new ones go, is in README.md ("Architecture").

#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod docker;
pub mod doctor;
pub mod egress;
pub mod error;
pub mod ipam;
pub mod kernel;
pub mod model;
pub mod network_services;
pub mod platform;
pub mod plugin;
pub mod policy;
pub mod ports;
pub mod preload_setup;
pub mod privileges;
pub mod proxy;
pub mod render;
pub mod service;
pub mod state;
pub mod workers;

pub use error::{Error, Result};
