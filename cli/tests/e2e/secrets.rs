//! Secrets stay secret: good and bad checkouts, over HTTP and straight onto the broker, each
//! with a payment token no other test uses; then everything the services exported (spans,
//! logs, metrics at the OTLP receiver), wrote (their log files), answered (every HTTP body)
//! and stored (every table of every schema, every message of every stream, once the charges
//! are done) is searched for those tokens. The token may travel to the payment worker; it
//! must stay nowhere.

use crate::flow::leaks;
use crate::http;
use crate::support::{Options, Stack, receiver, request};
use bytes::Bytes;
use checkout_harness::NatsServer;
use serde_json::{Value, json};
use sqlx::Row;
use std::time::Duration;
use uuid::Uuid;

fn token(what: &str) -> String {
    format!("tok_live_{what}_{}", Uuid::new_v4().simple())
}

fn cart(customer: &str, token: &Value) -> Value {
    json!({
        "customer_id": customer,
        "items": [{"sku": "SKU-MUG", "quantity": 1, "unit_price_cents": 2100}],
        "payment_token": token, "amount_cents": 2100, "currency": "EUR"
    })
}

async fn post(addr: std::net::SocketAddr, body: &[u8]) -> http::Response {
    let headers = [("Content-Type", "application/json")];
    http::request(addr, "POST", "/checkout", &headers, body).await
}

/// Waits until the gateway says the checkout `saga_id` ended; returns its state.
async fn ended(addr: std::net::SocketAddr, saga_id: &str) -> String {
    for _ in 0..600 {
        let status = http::request(addr, "GET", &format!("/checkouts/{saga_id}"), &[], b"").await;
        if status.status == 200 {
            let state = status.json()["state"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if ["completed", "compensated", "failed"].contains(&state.as_str()) {
                return state;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("checkout {saga_id} did not end");
}

/// Every place in the database's tables (every schema but the system's) holding a secret.
async fn stored_in_tables(pool: &sqlx::PgPool, secrets: &[&str]) -> Vec<String> {
    let tables = sqlx::query(
        "SELECT table_schema, table_name FROM information_schema.tables \
         WHERE table_type = 'BASE TABLE' \
           AND table_schema NOT IN ('pg_catalog', 'information_schema')",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(
        tables.len() >= 10,
        "every schema's tables: {}",
        tables.len()
    );
    let mut found = Vec::new();
    for table in tables {
        let (schema, name): (String, String) = (table.get(0), table.get(1));
        let sql = format!(
            "SELECT coalesce(string_agg(t::text, E'\\n'), '') FROM \"{schema}\".\"{name}\" t"
        );
        // The names come from the catalog, not from input.
        let sql = sqlx::AssertSqlSafe(sql);
        let text: String = sqlx::query_scalar(sql).fetch_one(pool).await.unwrap();
        for secret in secrets {
            if text.contains(secret) {
                found.push(format!("{secret} in table {schema}.{name}"));
            }
        }
    }
    found
}

/// Every stored message (subject, headers, body) of every stream holding a secret.
async fn stored_in_streams(nats: &NatsServer, secrets: &[&str]) -> Vec<String> {
    let js = async_nats::jetstream::new(nats.admin_client().await.unwrap());
    let topology = checkout_shared::streams::Topology::load().unwrap();
    let mut found = Vec::new();
    for def in &topology.streams {
        let mut stream = js.get_stream(&def.name).await.unwrap();
        let state = stream.info().await.unwrap().state.clone();
        for seq in state.first_sequence..=state.last_sequence.min(state.first_sequence + 10_000) {
            let Ok(message) = stream.get_raw_message(seq).await else {
                continue;
            };
            let headers: String = message
                .headers
                .iter()
                .map(|(k, v)| format!("{k}: {v:?}\n"))
                .collect();
            let text = format!(
                "{}\n{headers}{}",
                message.subject,
                String::from_utf8_lossy(&message.payload)
            );
            for secret in secrets {
                if text.contains(secret) {
                    found.push(format!("{secret} in {} #{seq}: {text}", def.name));
                }
            }
        }
    }
    found
}

/// Waits until no command or request is left to do: every charge has been taken.
async fn work_done(nats: &NatsServer) {
    let js = async_nats::jetstream::new(nats.admin_client().await.unwrap());
    for _ in 0..300 {
        let mut left = 0;
        for name in ["CHECKOUT_REQUESTS", "CHECKOUT_COMMANDS", "CHECKOUT_EVENTS"] {
            let mut stream = js.get_stream(name).await.unwrap();
            left += stream.info().await.unwrap().state.messages;
        }
        if left == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("work left in the work queues");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_payment_token_is_exported_logged_answered_or_kept_after_its_charge() {
    let stack = Stack::start(Options {
        gateway: true,
        ..Options::default()
    })
    .await;
    let addr = stack.gateway.unwrap();
    let client = stack.client().await;
    let mut secrets: Vec<String> = Vec::new();
    let mut answers = Vec::new();

    // Good checkouts over HTTP: one completes, one has its order refused and is refunded.
    let mut accepted = Vec::new();
    for (customer, outcome) in [("cust-s", "completed"), ("order-fails-s", "compensated")] {
        let secret = token(customer);
        let response = post(addr, cart(customer, &json!(secret)).to_string().as_bytes()).await;
        assert_eq!(
            response.status,
            202,
            "{}",
            String::from_utf8_lossy(&response.body)
        );
        let saga_id = response.json()["saga_id"].as_str().unwrap().to_owned();
        accepted.push((saga_id, outcome));
        answers.push(response);
        secrets.push(secret);
    }
    // And one straight onto the broker.
    let direct = token("direct");
    let checkout = request("cust-s", &direct, &[("SKU-MUG", 1)], 2100);
    assert_eq!(stack.checkout(&client, &checkout).await.0, "completed");
    secrets.push(direct);

    // Bad checkouts over HTTP, the token where serde would quote it: a card number in the
    // token's place, a token in a number's place, a token as a field name, broken JSON.
    let card = format!("4000{:012}", rand::random::<u64>() % 1_000_000_000_000);
    let (in_amount, as_key, in_broken) = (token("amount"), token("key"), token("broken"));
    let mut number = cart("cust-s", &json!(1));
    number["payment_token"] = serde_json::from_str(&card).unwrap();
    let mut amount = cart("cust-s", &json!("tok_visa"));
    amount["amount_cents"] = json!(in_amount);
    let mut key = cart("cust-s", &json!("tok_visa"));
    key[as_key.as_str()] = json!(1);
    let broken = format!(r#"{{"payment_token": "{in_broken}", "items": ["#);
    for (body, status) in [
        (number.to_string(), 422),
        (amount.to_string(), 422),
        (key.to_string(), 422),
        (broken, 400),
    ] {
        let response = post(addr, body.as_bytes()).await;
        assert_eq!(response.status, status, "{body}");
        answers.push(response);
    }
    secrets.extend([card, in_amount, as_key, in_broken]);
    // Bad checkouts straight onto the broker: refused at the orchestrator's door and kept on
    // checkout.rejected (an unknown SKU; broken JSON).
    let unknown = token("unknown_sku");
    let mut refused = request("cust-s", &unknown, &[("SKU-NOPE", 1)], 100);
    refused.currency = "EUR".into();
    let body = Bytes::from(serde_json::to_vec(&refused).unwrap());
    client.publish_raw("secret-sku".into(), body).await.unwrap();
    let garbled = token("garbled");
    let body = Bytes::from(format!(r#"{{"payment_token": "{garbled}", "#));
    client
        .publish_raw("secret-garbled".into(), body)
        .await
        .unwrap();
    secrets.extend([unknown, garbled]);

    for (saga_id, outcome) in &accepted {
        assert_eq!(ended(addr, saga_id).await, *outcome, "{saga_id}");
    }
    work_done(&stack.nats).await;
    // The rejections and their logs, then everything else that is exported in batches.
    let rejected = receiver()
        .wait_until(Duration::from_secs(30), |r| {
            r.logs()
                .iter()
                .filter(|l| l.body.contains("checkout rejected") && l.service == "orchestrator")
                .count()
                >= 2
        })
        .await;
    assert!(rejected, "both refusals at the orchestrator's door logged");
    tokio::time::sleep(Duration::from_secs(2)).await;

    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    let mut found = leaks(&secrets);
    for response in &answers {
        let text = String::from_utf8_lossy(&response.body);
        for secret in &secrets {
            if text.contains(secret) {
                found.push(format!("{secret} in an HTTP answer: {text}"));
            }
        }
    }
    let logs = stack.all_logs();
    for secret in &secrets {
        if logs.contains(secret) {
            found.push(format!("{secret} in a service's log file"));
        }
    }
    found.extend(stored_in_tables(&stack.pool, &secrets).await);
    found.extend(stored_in_streams(&stack.nats, &secrets).await);
    assert!(found.is_empty(), "payment tokens leaked: {found:#?}");

    // Not vacuous: the charges saw the tokens (the decisions are in the ledger), the
    // refusals were kept with their reasons, and their stored bodies say what was taken out.
    let charged: i64 = sqlx::query_scalar("SELECT count(*) FROM payment.ledger")
        .fetch_one(&stack.pool)
        .await
        .unwrap();
    assert!(charged >= 4, "three charges and a refund: {charged}");
    let rejections: i64 = sqlx::query_scalar("SELECT count(*) FROM saga.rejections")
        .fetch_one(&stack.pool)
        .await
        .unwrap();
    assert_eq!(rejections, 1, "the unknown SKU, by its checkout id");
    stack.stop().await;
}
