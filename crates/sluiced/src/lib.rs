//! `sluiced`, the Sluice broker process: it binds the listeners, runs the
//! front ends (the native protocol today) on the broker core
//! (`sluice-broker`), serves `/metrics` and `/health` over HTTP, runs
//! housekeeping, and shuts down in phases.
//!
//! - [`server`]: listeners, connection cap, housekeeping, graceful shutdown.
//! - [`http`]: `/metrics` and `/health`.
//! - [`cluster`]: the controller node, registration and reconciling with the cluster metadata.
//! - [`tls`]: TLS on the listeners (handshakes, SIGHUP reload) and to peer brokers.
//!
//! The library part exists so tests and benchmarks can embed a whole broker
//! in-process ([`Server`]); `main.rs` is the command line around it.

#![warn(missing_docs)]

pub mod cluster;
pub mod http;
pub mod replication;
pub mod server;
pub mod tls;

pub use server::{shutdown_signal, Server};
