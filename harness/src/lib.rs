//! Test and operations harness for the checkout saga.
//!
//! Integration tests and the tools (`checkout-tools demo`, `chaos`, `bench`) all need the same
//! disposable infrastructure: a private NATS JetStream server or cluster they can crash and
//! restart (and whose routes they can cut), a fresh
//! PostgreSQL database (or a private cluster it can crash), TCP proxies whose connections it can
//! cut or slow down, an OTLP receiver that keeps every span for inspection, and control over the
//! real service binaries as child processes. Everything here returns errors instead of panicking
//! because it also runs in the tools' commands, and errors about missing dependencies name the
//! exact command that installs or starts them. The product binary `checkout` never links it.

pub mod db;
pub mod nats;
pub mod otelite;
pub mod otlp;
pub mod pg_cluster;
pub mod process;
pub mod proxy;
pub mod readme;
mod signal;
pub mod signals;
pub mod span;
pub mod trace_check;

use std::net::{Ipv4Addr, TcpListener};

pub use db::TestDb;
pub use nats::{ClusterOptions, NatsCluster, NatsServer, Passwords};
pub use otlp::OtlpReceiver;
pub use pg_cluster::{PgCluster, PgTls};
pub use process::Service;
pub use proxy::TcpProxy;
pub use signals::{PointValue, ReceivedLog, ReceivedPoint};
pub use span::{ReceivedSpan, SpanEvent, SpanKind};

/// Returns a TCP port on 127.0.0.1 that was free a moment ago.
///
/// The port is found by binding port 0 and closing the listener again, so another process can
/// in principle take it before the caller binds it; callers that start servers retry on bind
/// failure for that reason.
///
/// # Panics
///
/// Panics if the loopback interface cannot bind any port at all, which means the machine cannot
/// run any of the harness's servers either.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("binding 127.0.0.1:0 must work on any machine that can run the harness")
}
