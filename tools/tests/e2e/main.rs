//! End-to-end tests of the tools: `checkout-tools demo`, `chaos` and `bench` as users run
//! them, with the product binary `checkout` for the services; and the chaos runner's database
//! audit against real PostgreSQL.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod audit;
mod bench;
mod chaos;
mod cluster;
mod demo;
mod election;
mod json_report;
mod product;
mod readme_examples;
