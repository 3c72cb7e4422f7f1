//! The checkout step by step, as its trace tells it: business context on the saga and step
//! spans, a span per cart line with the line that runs out, the payment gateway's call with
//! each decline code, the confirmation sent after the checkout completed — and no payment
//! token anywhere in what the services exported.

use crate::support::{Options, Stack, receiver, request, trace_with};
use checkout_harness::ReceivedSpan;
use checkout_harness::trace_check::{check_tree, render_tree};
use checkout_shared::Step;

pub(crate) fn named<'a>(spans: &'a [ReceivedSpan], name: &str) -> Vec<&'a ReceivedSpan> {
    spans.iter().filter(|s| s.name == name).collect()
}

pub(crate) fn one<'a>(spans: &'a [ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    let found = named(spans, name);
    assert_eq!(
        found.len(),
        1,
        "one {name:?} span expected in:\n{}",
        render_tree(spans)
    );
    found[0]
}

/// Every place in what the receiver got (span names, attributes, events and status messages;
/// log bodies and fields; metric attributes) where one of `secrets` appears.
pub(crate) fn leaks(secrets: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    let mut check = |what: String, text: &str| {
        for secret in secrets {
            if text.contains(secret) {
                found.push(format!("{secret} in {what}: {text}"));
            }
        }
    };
    for span in receiver().spans() {
        let at = format!("span {:?} of {}", span.name, span.service_name);
        check(at.clone(), &span.name);
        check(at.clone(), &span.status_message);
        for (key, value) in &span.attributes {
            check(format!("{at}, attribute {key}"), value);
        }
        for event in &span.events {
            check(format!("{at}, event {}", event.name), &event.name);
            for (key, value) in &event.attributes {
                check(format!("{at}, event {} {key}", event.name), value);
            }
        }
    }
    for log in receiver().logs() {
        let at = format!("log of {}", log.service);
        check(at.clone(), &log.body);
        for (key, value) in &log.attributes {
            check(format!("{at}, field {key}"), value);
        }
    }
    let names = checkout_shared::metrics::INSTRUMENTS.map(|i| i.name);
    for point in names.iter().flat_map(|name| receiver().metric(name)) {
        for (key, value) in &point.attributes {
            check(format!("metric {} {key}", point.name), value);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_step_traces_its_business_context_and_no_token_is_exported() {
    let mut options = Options::default();
    options
        .env
        .push(("payment", "PAYMENT_GATEWAY_LATENCY_MS", "25".into()));
    let stack = Stack::start(options).await;
    let client = stack.client().await;
    // A token no other test uses, so finding it anywhere can only be this test's leak.
    let visa = format!("tok_visa_{}", uuid::Uuid::new_v4().simple());

    // Completed: two lines, three units, priced from the catalog (2 x 2100 + 300).
    let checkout = request("cust-flow", &visa, &[("SKU-MUG", 2), ("SKU-TEE", 1)], 4_500);
    let (outcome, trace_id) = stack.checkout(&client, &checkout).await;
    assert_eq!(outcome, "completed");
    // The confirmation's step span ends after the checkout: wait for it.
    let spans = trace_with(&trace_id, "step notification.send").await;
    let problems = check_tree(&spans);
    assert!(problems.is_empty(), "not whole: {problems:#?}");
    for service in [
        "checkout-client",
        "orchestrator",
        "inventory",
        "payment",
        "order",
        "notification",
    ] {
        assert!(
            spans.iter().any(|s| s.service_name == service),
            "no span from {service}:\n{}",
            render_tree(&spans)
        );
    }
    let saga = one(&spans, "saga checkout");
    let id = checkout.checkout_id.to_string();
    for (key, value) in [
        ("checkout.id", id.as_str()),
        ("user.id", "cust-flow"),
        ("cart.item_count", "3"),
        ("checkout.amount_cents", "4500"),
        ("checkout.currency", "EUR"),
        ("checkout.outcome", "completed"),
    ] {
        assert_eq!(saga.attr(key), Some(value), "saga span {key}");
    }
    assert_eq!(saga.attr("checkout.failure_step"), None);
    for step in Step::ALL {
        let span = one(&spans, &format!("step {}", step.action_name()));
        assert_eq!(span.attr("checkout.step"), Some(step.as_str()));
        assert_eq!(span.attr("saga.step"), Some(step.as_str()));
        assert!(!span.error, "{step} succeeded");
    }
    // Each full-length span hangs under its "started" span, which was out before any work.
    let started = one(&spans, "saga checkout started");
    assert_eq!(
        saga.parent_span_id.as_deref(),
        Some(started.span_id.as_str())
    );
    let notify = one(&spans, "step notification.send");
    let notify_started = one(&spans, "step notification.send started");
    assert_eq!(
        notify.parent_span_id.as_deref(),
        Some(notify_started.span_id.as_str())
    );
    assert_eq!(
        notify_started.parent_span_id.as_deref(),
        Some(started.span_id.as_str()),
        "the confirmation is a step of the saga"
    );
    let lines = named(&spans, "inventory reserve line");
    let mut seen: Vec<_> = lines
        .iter()
        .map(|l| (l.attr("product.id"), l.attr("quantity.requested")))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [(Some("SKU-MUG"), Some("2")), (Some("SKU-TEE"), Some("1"))]
    );
    assert!(lines.iter().all(|l| l.events.is_empty() && !l.error));
    let charge = one(&spans, "payment gateway charge");
    assert_eq!(charge.service_name, "payment");
    assert_eq!(charge.attr("payment.status"), Some("approved"));
    let latency: u64 = charge
        .attr("payment.gateway_latency_ms")
        .unwrap()
        .parse()
        .unwrap();
    assert!(latency >= 25, "the configured latency: {latency} ms");
    let ledger: String = sqlx::query_scalar(
        "SELECT entry_id::text FROM payment.ledger WHERE saga_id = $1 AND kind = 'charge'",
    )
    .bind(checkout.checkout_id)
    .fetch_one(&stack.pool)
    .await
    .unwrap();
    assert_eq!(charge.attr("payment.charge_id"), Some(ledger.as_str()));
    assert_eq!(charge.attr("payment.decline_code"), None);
    let deliver = one(&spans, "notification deliver");
    assert_eq!(deliver.service_name, "notification");
    let confirmations: i64 =
        sqlx::query_scalar("SELECT count(*) FROM notification.confirmations WHERE saga_id = $1")
            .bind(checkout.checkout_id)
            .fetch_one(&stack.pool)
            .await
            .unwrap();
    assert_eq!(confirmations, 1, "one confirmation for the order");

    // Failed at the first step: the second of two lines runs out (lines go in SKU order).
    let short = request("cust-flow", &visa, &[("SKU-MUG", 1), ("SKU-RARE", 4)], 0);
    let (outcome, trace_id) = stack.checkout(&client, &short).await;
    assert_eq!(outcome, "failed", "nothing to undo");
    let spans = trace_with(&trace_id, "saga checkout").await;
    let saga = one(&spans, "saga checkout");
    assert_eq!(saga.attr("checkout.outcome"), Some("failed"));
    assert_eq!(saga.attr("checkout.failure_step"), Some("inventory"));
    assert_eq!(saga.attr("checkout.failure_reason"), Some("out_of_stock"));
    assert!(spans.iter().all(|s| !s.name.starts_with("compensate ")));
    let lines = named(&spans, "inventory reserve line");
    let rare = lines
        .iter()
        .find(|l| l.attr("product.id") == Some("SKU-RARE"))
        .expect("a span for the SKU-RARE line");
    let event = rare
        .events
        .iter()
        .find(|e| e.name == "insufficient_stock")
        .expect("insufficient_stock on the line that failed");
    assert_eq!(
        event.attributes.get("requested").map(String::as_str),
        Some("4")
    );
    assert_eq!(
        event.attributes.get("available").map(String::as_str),
        Some("3")
    );
    assert!(rare.error);
    let mug = lines
        .iter()
        .find(|l| l.attr("product.id") == Some("SKU-MUG"))
        .expect("a span for the SKU-MUG line");
    assert!(
        mug.events.is_empty() && !mug.error,
        "the line that fit is fine"
    );
    assert_eq!(
        stack.stock("SKU-MUG").await,
        998,
        "only the first order holds mugs"
    );

    // Each decline code, from the test tokens, on the gateway's span and the saga's.
    for (token, code) in [
        ("tok_decline", "card_declined"),
        ("tok_insufficient_funds", "insufficient_funds"),
        ("tok_expired", "expired_card"),
    ] {
        let declined = request("cust-flow", token, &[("SKU-TEE", 1)], 0);
        let (outcome, trace_id) = stack.checkout(&client, &declined).await;
        assert_eq!(outcome, "compensated", "{token}");
        let spans = trace_with(&trace_id, "saga checkout").await;
        let charge = one(&spans, "payment gateway charge");
        assert_eq!(charge.attr("payment.status"), Some("declined"), "{token}");
        assert_eq!(charge.attr("payment.decline_code"), Some(code), "{token}");
        assert!(charge.error, "a decline has error status");
        assert_eq!(charge.attr("payment.charge_id"), None);
        let saga = one(&spans, "saga checkout");
        assert_eq!(saga.attr("checkout.failure_step"), Some("payment"));
        assert_eq!(saga.attr("checkout.failure_reason"), Some(code));
        assert_eq!(saga.attr("checkout.outcome"), Some("compensated"));
    }

    // Logs come with the next batch: wait for the last saga's, then scan everything.
    let logged = receiver()
        .wait_until(std::time::Duration::from_secs(20), |r| {
            !r.logs_of_trace(&trace_id).is_empty()
        })
        .await;
    assert!(logged, "the services' logs reach the receiver");
    let tokens = [
        visa.as_str(),
        "tok_decline",
        "tok_insufficient_funds",
        "tok_expired",
    ];
    let leaked = leaks(&tokens);
    assert!(leaked.is_empty(), "payment tokens exported: {leaked:#?}");
    stack.stop().await;
}
