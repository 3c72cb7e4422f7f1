//! The bug that kept customers' money: a refund that could not reach its table for longer
//! than a command's whole delivery budget used to be stored as a refusal, and the saga stuck
//! for good. Now the refund waits out the outage: the saga is flagged stuck on the way, ends
//! compensated by itself once the table is back, and an operator's retry hurries it.

use crate::support::{Options, Stack, request};
use checkout_shared::Step;
use checkout_shared::messages::LifecycleKind;
use checkout_shared::streams::Topology;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};
use uuid::Uuid;

async fn status(stack: &Stack, saga_id: Uuid) -> String {
    sqlx::query_scalar("SELECT status FROM saga.sagas WHERE saga_id = $1")
        .bind(saga_id)
        .fetch_one(&stack.pool)
        .await
        .unwrap()
}

async fn wait_for_status(stack: &Stack, saga_id: Uuid, want: &str, within: Duration) -> String {
    let start = Instant::now();
    loop {
        let now = status(stack, saga_id).await;
        if now == want || start.elapsed() > within {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn cli(stack: &Stack, args: &[&str]) -> (bool, String) {
    cli_with(stack, args, &[])
}

fn cli_with(stack: &Stack, args: &[&str], envs: &[(&str, &str)]) -> (bool, String) {
    let db_url: String = stack.db_url();
    let out = Command::new(PathBuf::from(env!("CARGO_BIN_EXE_checkout")))
        .args(args)
        .envs(stack.nats.passwords().admin_env())
        .envs(envs.iter().copied())
        .env("NATS_URL", stack.nats.url())
        .env("DATABASE_URL", db_url)
        .env("OTEL_TRACES_EXPORTER", "none")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_outlasting_the_delivery_budget_is_never_given_up() {
    let options = Options {
        env: vec![
            // The order is refused after the table breaks, so the refund meets the outage.
            ("order", "WORKER_LATENCY_MS", "2000".into()),
            ("orchestrator", "STEP_TIMEOUT_SECS", "1".into()),
            ("orchestrator", "MAX_STEP_TIMEOUT_SECS", "15".into()),
            ("orchestrator", "STUCK_AFTER_SECS", "5".into()),
        ],
        ..Options::default()
    };
    let stack = Stack::start(options).await;
    let client = stack.client().await;
    let stock_before = stack.stock("SKU-MUG").await;
    let by_itself = request("order-fails-a", "tok_visa", &[("SKU-MUG", 2)], 1_500);
    let by_retry = request("order-fails-b", "tok_visa", &[("SKU-MUG", 1)], 900);
    let mut charged = Vec::new();
    for checkout in [&by_itself, &by_retry] {
        let mut events = client.follow(checkout.checkout_id);
        client.publish(checkout).await.unwrap();
        let event = loop {
            let event = tokio::time::timeout(Duration::from_secs(30), events.recv())
                .await
                .unwrap()
                .unwrap();
            if event.kind == LifecycleKind::Step && event.step == Some(Step::Payment) {
                break event;
            }
        };
        charged.push(event.detail);
    }
    assert_eq!(charged, ["ok", "ok"], "both charged");

    // The payment worker's table is gone for longer than a command's whole delivery budget.
    let budget = Topology::load()
        .unwrap()
        .consumer("payment")
        .unwrap()
        .delivery_budget()
        .unwrap();
    let rename = |from: &str, to: &str| format!("ALTER TABLE payment.{from} RENAME TO {to}");
    sqlx::raw_sql(sqlx::AssertSqlSafe(rename("ledger", "ledger_away")))
        .execute(&stack.pool)
        .await
        .unwrap();
    let broke_at = Instant::now();
    for checkout in [&by_itself, &by_retry] {
        let now = wait_for_status(&stack, checkout.checkout_id, "stuck", budget).await;
        assert_eq!(now, "stuck", "flagged for an operator during the outage");
    }
    let (ok, listed) = cli(&stack, &["stuck"]);
    assert!(
        ok && listed.contains(&by_itself.checkout_id.to_string()),
        "{listed}"
    );
    tokio::time::sleep((budget + Duration::from_secs(3)).saturating_sub(broke_at.elapsed())).await;
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM payment.processed_messages WHERE action_key LIKE '%.undo'",
    )
    .fetch_one(&stack.pool)
    .await
    .unwrap();
    assert_eq!(
        stored, 0,
        "a failure to refund is never stored as an outcome"
    );
    for checkout in [&by_itself, &by_retry] {
        assert_eq!(status(&stack, checkout.checkout_id).await, "stuck");
    }
    // A retry during the outage writes the undo's next deadline by the deployed timing (the
    // orchestrator's STEP_TIMEOUT_SECS=1, not a default of 10 s).
    let id = by_retry.checkout_id.to_string();
    let deployed = [("STEP_TIMEOUT_SECS", "1"), ("MAX_STEP_TIMEOUT_SECS", "15")];
    let (ok, said) = cli_with(&stack, &["retry", &id], &deployed);
    assert!(ok, "retry during the outage: {said}");
    let wait: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM deadline_at - updated_at)::float8 FROM saga.sagas \
         WHERE saga_id = $1",
    )
    .bind(by_retry.checkout_id)
    .fetch_one(&stack.pool)
    .await
    .unwrap();
    assert!(
        wait < 5.0,
        "the retried undo waits {wait} s, not the deployed 1 s"
    );

    sqlx::raw_sql(sqlx::AssertSqlSafe(rename("ledger_away", "ledger")))
        .execute(&stack.pool)
        .await
        .unwrap();
    // An operator hurries one; the other gets there with nobody acting.
    let (ok, said) = cli(&stack, &["retry", &by_retry.checkout_id.to_string()]);
    assert!(ok, "retry of a flagged saga: {said}");
    let hurried = wait_for_status(
        &stack,
        by_retry.checkout_id,
        "compensated",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(hurried, "compensated");
    let alone = wait_for_status(
        &stack,
        by_itself.checkout_id,
        "compensated",
        Duration::from_secs(40),
    )
    .await;
    assert_eq!(alone, "compensated", "no operator action needed");

    for checkout in [&by_itself, &by_retry] {
        let ledger = stack.ledger(checkout.checkout_id).await;
        let net: i64 = ledger
            .iter()
            .map(|(kind, cents)| if kind == "refund" { -cents } else { *cents })
            .sum();
        assert_eq!(net, 0, "money given back: {ledger:?}");
    }
    assert_eq!(stack.stock("SKU-MUG").await, stock_before, "stock released");
    stack.stop().await;
}
