//! Identities on the broker (`nats/auth/users.conf`), with a real nats-server: a connection
//! without credentials is refused; the payment worker's identity cannot publish another
//! step's reply or any command; the client's cannot publish a command or a reply; and a
//! checkout completes with every service connected as itself, the administrator having
//! provisioned the streams.

use crate::support::{Options, Stack};
use checkout_harness::NatsServer;
use std::collections::BTreeMap;
use std::time::Duration;

/// Every identity of `nats/auth/users.conf`.
const IDENTITIES: [&str; 9] = [
    "admin",
    "orchestrator",
    "gateway",
    "client",
    "inventory",
    "payment",
    "order",
    "notification",
    "tracebridge",
];

/// One random password per identity, for one private broker.
#[derive(Debug, Clone)]
pub struct Passwords(BTreeMap<&'static str, String>);

impl Passwords {
    /// Fresh passwords.
    pub fn generate() -> Self {
        Passwords(
            IDENTITIES
                .iter()
                .map(|id| (*id, format!("{:032x}", rand::random::<u128>())))
                .collect(),
        )
    }

    /// The broker's configuration: the passwords as variables, then the users file as shipped.
    fn config(&self) -> String {
        let users = include_str!("../../../nats/auth/users.conf");
        let mut out: String = self
            .0
            .iter()
            .map(|(id, password)| format!("{}_PASSWORD: {password:?}\n", id.to_uppercase()))
            .collect();
        out.push_str(users);
        out
    }

    /// A private broker that requires these identities.
    pub async fn start_broker(&self) -> NatsServer {
        let admin = ("admin", self.0["admin"].as_str());
        NatsServer::start_with(&self.config(), Some(admin), None)
            .await
            .expect("nats-server with identities")
    }

    /// A connection as the administrator.
    pub async fn admin(&self, url: &str) -> async_nats::Client {
        async_nats::ConnectOptions::new()
            .user_and_password("admin".into(), self.0["admin"].clone())
            .connect(url)
            .await
            .expect("connect as the administrator")
    }

    /// What a service needs to connect as `identity` without provisioning.
    pub fn service_env(&self, identity: &str) -> Vec<(String, String)> {
        vec![
            ("NATS_USER".into(), identity.to_owned()),
            ("NATS_PASSWORD".into(), self.0[identity].clone()),
            ("NATS_PROVISION".into(), "false".into()),
        ]
    }

    /// Runs `checkout provision` as the administrator.
    pub async fn provision(&self, url: &str) {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_checkout"))
            .arg("provision")
            .env("NATS_URL", url)
            .env("NATS_USER", "admin")
            .env("NATS_PASSWORD", &self.0["admin"])
            .kill_on_drop(true)
            .output()
            .await
            .expect("checkout provision ran");
        assert!(
            output.status.success(),
            "checkout provision: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// A connection as `identity`, and the server errors it is told of.
    async fn connect(
        &self,
        identity: &str,
        url: &str,
    ) -> (
        async_nats::Client,
        tokio::sync::mpsc::UnboundedReceiver<String>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let client = async_nats::ConnectOptions::new()
            .user_and_password(identity.to_owned(), self.0[identity].clone())
            .custom_inbox_prefix(format!("_INBOX_{identity}"))
            .event_callback(move |event| {
                let tx = tx.clone();
                async move {
                    if let async_nats::Event::ServerError(err) = event {
                        let _ = tx.send(err.to_string());
                    }
                }
            })
            .connect(url)
            .await
            .expect("connect with an identity");
        (client, rx)
    }
}

/// Publishes on `subject` and waits (bounded) for the server's permission violation naming it.
async fn refused(
    client: &async_nats::Client,
    errors: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    subject: &str,
) {
    client
        .publish(subject.to_owned(), "{}".into())
        .await
        .expect("queued");
    client.flush().await.expect("flushed");
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(error) = errors.recv().await {
            if error.to_lowercase().contains("permissions violation") && error.contains(subject) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(seen, Ok(true), "no permissions violation for {subject}");
}

async fn stored(admin: &async_nats::Client, stream: &str) -> u64 {
    let js = async_nats::jetstream::new(admin.clone());
    let mut stream = js.get_stream(stream).await.unwrap();
    stream.info().await.unwrap().state.messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_identity_may_do_its_own_job_only() {
    let passwords = Passwords::generate();
    let nats = passwords.start_broker().await;
    let url = nats.url();
    assert!(
        async_nats::connect(&url).await.is_err(),
        "a connection without credentials is refused"
    );
    let wrong = async_nats::ConnectOptions::new()
        .user_and_password("payment".into(), "not-its-password".into())
        .connect(&url)
        .await;
    assert!(wrong.is_err(), "nor one with a wrong password");
    passwords.provision(&url).await;
    let admin = passwords.admin(&url).await;

    let (payment, mut payment_errors) = passwords.connect("payment", &url).await;
    refused(
        &payment,
        &mut payment_errors,
        "checkout.evt.inventory.reserved",
    )
    .await;
    refused(&payment, &mut payment_errors, "checkout.cmd.payment.charge").await;
    refused(&payment, &mut payment_errors, "checkout.cmd.order.create").await;
    refused(&payment, &mut payment_errors, "checkout.requested").await;
    let (client, mut client_errors) = passwords.connect("client", &url).await;
    refused(
        &client,
        &mut client_errors,
        "checkout.cmd.inventory.reserve",
    )
    .await;
    refused(&client, &mut client_errors, "checkout.evt.payment.charged").await;
    refused(&client, &mut client_errors, "checkout.saga.x.completed").await;
    assert_eq!(stored(&admin, "CHECKOUT_COMMANDS").await, 0);
    assert_eq!(stored(&admin, "CHECKOUT_EVENTS").await, 0);

    // Not refusing everything: each may do its own job.
    let js = async_nats::jetstream::new(payment.clone());
    js.publish("checkout.evt.payment.charged", "{}".into())
        .await
        .expect("the payment worker publishes its reply")
        .await
        .expect("stored");
    let js = async_nats::jetstream::new(client.clone());
    js.publish("checkout.requested", "{}".into())
        .await
        .expect("the client publishes a checkout")
        .await
        .expect("stored");
    assert_eq!(stored(&admin, "CHECKOUT_EVENTS").await, 1);
    assert_eq!(stored(&admin, "CHECKOUT_REQUESTS").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_completes_with_every_service_connected_as_itself() {
    let stack = Stack::start(Options {
        identities: true,
        ..Options::default()
    })
    .await;
    let passwords = stack.identities.clone().unwrap();
    let client = passwords.service_env("client");
    let envs: Vec<(&str, String)> = client
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trace_bridge_reads_the_broker_s_trace_events_and_may_publish_nothing() {
    use checkout_shared::broker_trace::{TRACE_DEST, TRACE_SUBJECT};
    use futures::StreamExt as _;
    let passwords = Passwords::generate();
    let nats = passwords.start_broker().await;
    let url = nats.url();
    passwords.provision(&url).await;
    let (bridge, mut bridge_errors) = passwords.connect("tracebridge", &url).await;
    let mut events = bridge.subscribe(TRACE_SUBJECT).await.unwrap();
    bridge.flush().await.unwrap();

    let (client, _client_errors) = passwords.connect("client", &url).await;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(TRACE_DEST, TRACE_SUBJECT);
    async_nats::jetstream::new(client)
        .publish_with_headers("checkout.requested", headers, "{}".into())
        .await
        .expect("the client publishes a traced checkout")
        .await
        .expect("stored");
    let event = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("a trace event within 10 s")
        .expect("the subscription is open");
    assert!(
        String::from_utf8_lossy(&event.payload).contains("checkout.requested"),
        "the event names the traced subject"
    );

    refused(&bridge, &mut bridge_errors, "checkout.requested").await;
    refused(&bridge, &mut bridge_errors, "checkout.evt.payment.charged").await;
}
