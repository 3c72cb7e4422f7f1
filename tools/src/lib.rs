//! `checkout-tools`: what starts private stacks and breaks them, kept out of the product. The
//! demo, the chaos runner and the benchmark use the test harness (a nats-server spawner,
//! PostgreSQL clusters, fault proxies, an OTLP receiver) and run the product binary `checkout`
//! for the services ([`product`] finds it). `main.rs` only parses arguments.
//!
//! ```text
//!  checkout-tools demo | chaos | bench ─▶ harness: nats-server, PostgreSQL, proxies, OTLP receiver
//!          │                              (local: whatever is missing; stack: all of it, private)
//!          └─spawns─▶ checkout orchestrator | checkout worker <kind>   (the product binary)
//!          └─spawns─▶ checkout-tools bench-skeleton                    (the bench's yardstick)
//! ```

pub mod bench;
pub mod broker;
pub mod chaos;
pub mod demo;
pub mod local;
pub mod product;
pub mod stack;
