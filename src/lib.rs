//! homelab-operator: run a Proxmox homelab from declared state.
//!
//! Data flows one way: `api` (CRD types) → `reconcile` (pure plans + apply
//! through provider traits) → `providers` (HTTP clients). `controller` is the
//! only module that talks to the Kubernetes API; `sim` serves fake outside
//! systems for the demo, tests and benchmarks.
pub mod api;
pub mod cli;
pub mod config;
pub mod controller;
pub mod cron;
pub mod http;
pub mod human;
pub mod metrics;
pub mod monitor;
pub mod notify;
pub mod providers;
pub mod reconcile;
pub mod sim;
pub mod status;
