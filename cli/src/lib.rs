//! The `checkout` command's library: the client (publish, follow, load), operators' commands
//! and the service entry points. `main.rs` only parses arguments. It holds no test
//! infrastructure: the demo, the chaos runner and the benchmark are `checkout-tools` (crate
//! `tools/`), which uses this library and runs this binary for the services.

pub mod client;
pub mod common;
pub mod databases;
pub mod health;
pub mod load;
pub mod nats_trace_bridge;
pub mod ops;
pub mod otelite;
pub mod publish;
pub mod services;
pub mod show;
pub mod trace_links;
pub mod watch;
