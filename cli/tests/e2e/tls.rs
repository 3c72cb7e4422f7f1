//! A checkout end to end over TLS: a nats-server that speaks TLS only, with a certificate from
//! a throw-away CA (`scripts/make-certs`); every service and the client verify it
//! (`NATS_TLS_CA`); a client that does not trust that CA is refused.

use crate::support::{Options, Stack};
use checkout_harness::NatsServer;
use std::path::PathBuf;

/// A throw-away CA and the server's certificate, in a directory of their own.
#[derive(Debug)]
pub struct Certificates {
    dir: tempfile::TempDir,
}

impl Certificates {
    /// Makes them with `scripts/make-certs`.
    pub fn make() -> Self {
        let dir = tempfile::tempdir().expect("certificate dir");
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/make-certs");
        let output = std::process::Command::new("bash")
            .arg(&script)
            .arg(dir.path())
            .output()
            .expect("scripts/make-certs ran");
        assert!(
            output.status.success(),
            "scripts/make-certs: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Certificates { dir }
    }

    fn file(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// The CA certificate, as the services are given it.
    pub fn ca(&self) -> String {
        self.file("ca.pem")
    }

    /// PostgreSQL's certificate and key, for a private cluster that speaks TLS.
    pub fn postgres(&self) -> checkout_harness::PgTls {
        checkout_harness::PgTls {
            cert_file: self.file("postgres.pem").into(),
            key_file: self.file("postgres-key.pem").into(),
        }
    }

    /// A private broker that speaks TLS only, with the server certificate (and the identities,
    /// as every private broker).
    pub async fn start_broker(&self) -> NatsServer {
        let tls = format!(
            "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  timeout: 5\n}}\n",
            self.file("server.pem"),
            self.file("server-key.pem")
        );
        let ca = PathBuf::from(self.ca());
        NatsServer::start_with(&tls, Some(&ca))
            .await
            .expect("nats-server over TLS")
    }

    /// A connection as the administrator that verifies the server with the CA.
    pub async fn connect(&self, nats: &NatsServer) -> async_nats::Client {
        nats.passwords()
            .admin_options()
            .add_root_certificates(PathBuf::from(self.ca()))
            .require_tls(true)
            .connect(nats.url())
            .await
            .expect("connect over TLS")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_completes_over_tls_and_an_untrusting_client_is_refused() {
    let stack = Stack::start(Options {
        tls: true,
        ..Options::default()
    })
    .await;
    let tls = stack.tls.as_ref().unwrap();
    let plain = async_nats::ConnectOptions::new()
        .require_tls(true)
        .connect(stack.nats.url())
        .await;
    assert!(
        plain.is_err(),
        "a client that does not trust the CA is refused"
    );
    let envs = [("NATS_TLS_CA", tls.ca())];
    let out = stack
        .run_checkout(
            &[
                "publish",
                "--item",
                "SKU-MUG:1",
                "--wait",
                "--trace-ui",
                "none",
            ],
            &envs,
        )
        .await;
    assert!(out.contains("outcome: completed"), "{out}");
    stack.stop().await;
}
