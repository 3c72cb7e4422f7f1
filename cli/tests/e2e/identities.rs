//! Identities on the broker (`nats/auth/users.conf`), on by default in every broker the
//! harness starts: a connection without credentials is refused; the payment worker's identity
//! cannot publish another step's reply or any command; the client's cannot publish a command or a reply; and a
//! default stack's checkout completes with every service connected as itself (as the broker's
//! `connz` lists them), the administrator having provisioned the streams.

use crate::support::{Options, Stack};
use checkout_harness::NatsServer;
use std::time::Duration;

/// A connection to `nats` as `identity` (with its own inbox, as a service makes), and the
/// server errors it is told of.
pub(crate) async fn connect(
    nats: &NatsServer,
    identity: &str,
) -> (
    async_nats::Client,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let password = nats
        .passwords()
        .of(identity)
        .expect("an identity")
        .to_owned();
    let client = async_nats::ConnectOptions::new()
        .user_and_password(identity.to_owned(), password)
        .custom_inbox_prefix(format!("_INBOX_{identity}"))
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                if let async_nats::Event::ServerError(err) = event {
                    let _ = tx.send(err.to_string());
                }
            }
        })
        .connect(nats.url())
        .await
        .expect("connect with an identity");
    (client, rx)
}

/// Publishes on `subject` and waits (bounded) for the server's permission violation naming it.
pub(crate) async fn refused(
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
    // The harness's default broker: no opting in.
    let nats = NatsServer::start_async().await.expect("nats-server");
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
    provision(&nats, &[]).await;
    let admin = nats.admin_client().await.expect("the administrator");

    let (payment, mut payment_errors) = connect(&nats, "payment").await;
    refused(
        &payment,
        &mut payment_errors,
        "checkout.evt.inventory.reserved",
    )
    .await;
    refused(&payment, &mut payment_errors, "checkout.cmd.payment.charge").await;
    refused(&payment, &mut payment_errors, "checkout.cmd.order.create").await;
    refused(&payment, &mut payment_errors, "checkout.requested").await;
    let (client, mut client_errors) = connect(&nats, "client").await;
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
async fn a_default_stack_runs_a_checkout_with_every_service_connected_as_itself() {
    // No option asks for identities: they are the default.
    let stack = Stack::start(Options::default()).await;
    let client: Vec<(String, String)> = stack.nats.service_env("client").expect("client");
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

    // Who the broker says is connected: each service as itself, nobody anonymous. (A broker
    // without authorization reports the user a client names, too: hence the refusal below.)
    let users = connected_users(&stack.nats).await;
    for service in [
        "orchestrator",
        "inventory",
        "payment",
        "order",
        "notification",
    ] {
        assert!(
            users.iter().any(|u| u == service),
            "{service} is not connected as itself: {users:?}"
        );
    }
    assert!(
        users.iter().all(|u| !u.is_empty()),
        "an anonymous connection: {users:?}"
    );
    assert!(
        async_nats::connect(stack.nats.url()).await.is_err(),
        "the default stack's broker lets an unauthenticated client in"
    );
    stack.stop().await;
}

/// The authenticated user of every connection the broker has (`/connz?auth=true`; empty for
/// an anonymous one).
async fn connected_users(nats: &NatsServer) -> Vec<String> {
    let port: u16 = nats
        .monitor_url()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a monitoring port");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let response = crate::http::request(addr, "GET", "/connz?auth=true&limit=1024", &[], b"").await;
    assert_eq!(response.status, 200);
    let connz: serde_json::Value = serde_json::from_slice(&response.body).expect("JSON");
    let connections = connz["connections"].as_array().cloned().unwrap_or_default();
    assert!(!connections.is_empty(), "no connection listed: {connz}");
    connections
        .iter()
        .map(|c| c["authorized_user"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trace_bridge_reads_the_broker_s_trace_events_and_may_publish_nothing() {
    use checkout_shared::broker_trace::{TRACE_DEST, TRACE_SUBJECT};
    use futures::StreamExt as _;
    let nats = NatsServer::start_async().await.expect("nats-server");
    provision(&nats, &[]).await;
    let (bridge, mut bridge_errors) = connect(&nats, "tracebridge").await;
    let mut events = bridge.subscribe(TRACE_SUBJECT).await.unwrap();
    bridge.flush().await.unwrap();

    let (client, _client_errors) = connect(&nats, "client").await;
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

/// Runs `checkout provision` as the administrator of `nats` (with `extra` environment: TLS),
/// as an operator does before starting services whose identities may not provision.
pub async fn provision(nats: &NatsServer, extra: &[(String, String)]) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_checkout"))
        .arg("provision")
        .env("NATS_URL", nats.url())
        .envs(nats.passwords().admin_env())
        .envs(extra.iter().cloned())
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
