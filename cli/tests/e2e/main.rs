//! End-to-end tests: the real binaries, a real nats-server, a real PostgreSQL, and spans
//! read from what really went out over OTLP.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod bad_input;
mod broker_hop;
mod compose;
mod compose_auth;
mod compose_cluster;
mod crash;
mod flow;
mod gateway;
mod gateway_input;
mod gateway_status;
mod health;
mod help;
mod hostile;
mod http;
mod identities;
mod kubernetes;
mod kubernetes_nats;
mod live_trace;
mod nats_urls;
mod notify;
mod otelite;
mod outage;
mod outcomes;
mod postgres_tls;
mod private_otelite;
mod promql;
mod race;
mod readme;
mod readme_examples;
mod refused;
mod replay;
mod schemathesis;
mod secrets;
mod shedding;
mod show;
mod signals;
mod split_databases;
mod stack;
mod stack_data;
mod support;
mod tls;
mod traces;
