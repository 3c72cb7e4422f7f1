//! The `checkout` command's library: the client (publish, follow, load), the demo's local
//! stack, operators' commands and the service entry points. `main.rs` only parses arguments.

pub mod bench;
pub mod chaos;
pub mod client;
pub mod common;
pub mod demo;
pub mod load;
pub mod local;
pub mod ops;
pub mod otelite;
pub mod services;
pub mod show;
pub mod stack;
pub mod trace_links;
pub mod watch;
