//! The first hour with `checkout publish`: a cart is completed as a shop completes it, and a
//! checkout refused at the door says why everywhere (publish --wait, show, watch), the same
//! way however often it is delivered.

use crate::support::{Options, Stack};
use bytes::Bytes;
use checkout_shared::messages::{LifecycleEvent, LifecycleKind};
use checkout_shared::{RejectionCode, SagaStatus, subjects};
use futures::StreamExt;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// What a run of the `checkout` binary gave.
struct Run {
    ok: bool,
    stdout: String,
    took: Duration,
}

/// Runs the real `checkout` binary against the stack, whatever its exit code.
async fn run(stack: &Stack, args: &[&str]) -> Run {
    let started = Instant::now();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_checkout"))
        .args(args)
        .env("NATS_URL", stack.nats.url())
        .envs(stack.nats.passwords().admin_env())
        .env("DATABASE_URL", stack.db_url())
        .env("TRACE_UI", "none")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(90), output)
        .await
        .expect("checkout ended within 90 s")
        .expect("checkout ran");
    let run = Run {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        took: started.elapsed(),
    };
    eprintln!(
        "checkout {args:?}: ok={} in {:?}\n{}{}",
        run.ok,
        run.took,
        run.stdout,
        String::from_utf8_lossy(&output.stderr)
    );
    run
}

/// The saga id `publish` printed (`saga  <id>`).
fn saga_id(out: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix("saga  "))
        .expect("a saga line")
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_fills_the_cart_as_a_shop_does_and_watch_replays_an_ended_saga() {
    let stack = Stack::start(Options::default()).await;

    // Every line priced as the customer saw it, no amount, no currency: the amount is the
    // sum of the lines and the currency the catalog's.
    let priced = [
        "publish",
        "--item",
        "SKU-MUG:2@2100",
        "--item",
        "SKU-TEE:1@300",
        "--wait",
    ];
    let out = run(&stack, &priced).await;
    assert!(out.ok, "{}", out.stdout);
    assert!(out.stdout.contains("outcome: completed"), "{}", out.stdout);
    let completed = saga_id(&out.stdout);
    assert_eq!(
        stack.ledger(completed.parse().unwrap()).await,
        vec![("charge".to_owned(), 4_500)],
        "charged the sum of the lines"
    );

    // An amount given is sent as given: the door refuses the mismatch, and says so.
    let wrong = [
        "publish",
        "--item",
        "SKU-MUG:1",
        "--amount-cents",
        "5",
        "--wait",
    ];
    let out = run(&stack, &wrong).await;
    assert!(!out.ok, "a refused checkout fails the command");
    assert!(
        out.stdout.contains(
            "rejected amount_mismatch amount_cents: amount_cents is 5 but the lines add up to 2100"
        ),
        "{}",
        out.stdout
    );

    // A SKU the catalog cannot price: refused at once, as the gateway names it, not sent.
    let unknown = ["publish", "--item", "SKU-MUG:1", "--item", "SKU-NOPE:1"];
    let out = run(&stack, &unknown).await;
    assert!(!out.ok);
    assert!(
        out.stdout
            .starts_with(r#"rejected unknown_sku items[1].sku: unknown sku "SKU-NOPE""#),
        "{}",
        out.stdout
    );

    // `watch <id>` of a saga that has ended: its whole history, its end, and it exits.
    let out = run(&stack, &["watch", &completed, "--timeout-secs", "60"]).await;
    assert!(out.ok);
    assert!(
        out.took < Duration::from_secs(20),
        "exits at the end: {:?}",
        out.took
    );
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines[0].ends_with(" started"), "{}", out.stdout);
    for step in ["inventory.reserve", "payment.charge", "order.create"] {
        assert!(
            lines.iter().any(|l| l.contains(&format!("step {step}"))),
            "{step}: {}",
            out.stdout
        );
    }
    assert!(
        lines.iter().any(|l| l.ends_with(" completed")),
        "{}",
        out.stdout
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_refused_at_the_door_says_why_in_publish_show_and_watch() {
    let stack = Stack::start(Options::default()).await;

    // A priced line the catalog does not list reaches the door, which refuses it.
    let args = [
        "publish",
        "--item",
        "SKU-MUG:1",
        "--item",
        "SKU-NOPE:2@500",
        "--wait",
    ];
    let out = run(&stack, &args).await;
    assert!(!out.ok, "a refused checkout fails the command");
    assert!(
        out.took < Duration::from_secs(3),
        "ends with the refusal, not the timeout: {:?}",
        out.took
    );
    let refusal = r#"rejected unknown_sku items[1].sku: unknown sku "SKU-NOPE""#;
    assert!(out.stdout.contains(refusal), "{}", out.stdout);
    assert!(out.stdout.contains("outcome: rejected"), "{}", out.stdout);
    let id = saga_id(&out.stdout);

    let out = run(&stack, &["show", &id]).await;
    assert!(out.ok, "{}", out.stdout);
    for line in [
        "status   rejected",
        "reason   unknown_sku",
        "field    items[1].sku",
        r#"detail   unknown sku "SKU-NOPE""#,
    ] {
        assert!(out.stdout.contains(line), "{line}: {}", out.stdout);
    }
    let json = run(&stack, &["show", &id, "--json"]).await;
    let value: serde_json::Value = serde_json::from_str(json.stdout.trim()).unwrap();
    assert_eq!(
        (&value["status"], &value["rejection"], &value["field"]),
        (
            &"rejected".into(),
            &"unknown_sku".into(),
            &"items[1].sku".into()
        )
    );

    let out = run(&stack, &["watch", &id, "--timeout-secs", "60"]).await;
    assert!(out.ok);
    assert!(out.took < Duration::from_secs(20), "exits: {:?}", out.took);
    assert_eq!(out.stdout.trim(), format!("{id} {refusal}"));
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_checkout_delivered_again_gets_the_same_event_and_nothing_else() {
    let stack = Stack::start(Options::default()).await;
    let client = stack.client().await;
    let id = Uuid::new_v4();
    let body = |sku: &str| {
        let cart = serde_json::json!({
            "checkout_id": id, "customer_id": "cust-1",
            "items": [{"sku": sku, "quantity": 1, "unit_price_cents": 2100}],
            "payment_token": "tok_visa", "amount_cents": 2100, "currency": "EUR"
        });
        Bytes::from(serde_json::to_vec(&cart).unwrap())
    };
    let mut events = client
        .nats()
        .subscribe(subjects::lifecycle_of(id))
        .await
        .unwrap();
    client.nats().flush().await.unwrap();
    let mut next = async || {
        let message = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("an answer")
            .unwrap();
        serde_json::from_slice::<LifecycleEvent>(&message.payload).unwrap()
    };
    // Three deliveries of the checkout (distinct message ids, so JetStream keeps each): the
    // refused cart twice, then the cart mended. The answer is the first one, every time.
    client
        .publish_raw("first".into(), body("SKU-NOPE"))
        .await
        .unwrap();
    let first = next().await;
    assert_eq!(first.kind, LifecycleKind::Rejected);
    assert_eq!(first.status, Some(SagaStatus::Rejected));
    assert_eq!(first.rejection, Some(RejectionCode::UnknownSku));
    assert_eq!(first.field.as_deref(), Some("items[0].sku"));
    assert_eq!(first.detail, r#"unknown sku "SKU-NOPE""#);
    client
        .publish_raw("again".into(), body("SKU-NOPE"))
        .await
        .unwrap();
    assert_eq!(next().await, first, "the same event again");
    client
        .publish_raw("mended".into(), body("SKU-MUG"))
        .await
        .unwrap();
    assert_eq!(next().await, first, "a refused checkout stays refused");

    let count = |sql: &'static str| {
        let pool = stack.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let recorded = count("SELECT count(*) FROM saga.rejections WHERE saga_id = $1").await;
    assert_eq!(recorded, 1, "one record");
    let sagas = count("SELECT count(*) FROM saga.sagas WHERE saga_id = $1").await;
    assert_eq!(sagas, 0, "never a saga");
    let js = async_nats::jetstream::new(client.nats().clone());
    let mut rejected = js.get_stream("CHECKOUT_REJECTED").await.unwrap();
    let set_aside = rejected.info().await.unwrap().state.messages;
    assert_eq!(set_aside, 1, "one request set aside on checkout.rejected");
    assert!(
        tokio::time::timeout(Duration::from_millis(500), events.next())
            .await
            .is_err(),
        "nothing else was said"
    );
    let stock_untouched = stack.stock("SKU-MUG").await;
    assert_eq!(stock_untouched, 1000);
    stack.stop().await;
}
