//! The confirmation is fire-and-forget: one that fails every time never fails the checkout.

use crate::flow::{named, one};
use crate::support::{Options, Stack, receiver, request, trace_with};
use checkout_shared::messages::LifecycleEvent;
use checkout_shared::metrics as m;
use checkout_shared::{Step, subjects};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmation_that_always_fails_leaves_the_checkout_completed_and_is_counted() {
    let run = uuid::Uuid::new_v4().to_string();
    let mut options = Options::default();
    for (key, value) in [
        ("NOTIFICATION_FAIL_RATE", "1.0"),
        ("NOTIFICATION_ATTEMPTS", "3"),
        ("NOTIFICATION_BACKOFF_MS", "20"),
    ] {
        options.env.push(("notification", key, value.into()));
    }
    // This run's metrics only: other tests share the receiver.
    options
        .env
        .push(("orchestrator", "OTEL_METRIC_EXPORT_INTERVAL", "300".into()));
    options.env.push((
        "orchestrator",
        "OTEL_RESOURCE_ATTRIBUTES",
        format!("test.run={run}"),
    ));
    let stack = Stack::start(options).await;
    let client = stack.client().await;
    let checkout = request("cust-unreachable", "tok_visa", &[("SKU-TEE", 2)], 0);
    let (outcome, trace_id) = stack.checkout(&client, &checkout).await;
    assert_eq!(outcome, "completed", "the checkout does not wait for it");

    let spans = trace_with(&trace_id, "step notification.send").await;
    let step = one(&spans, "step notification.send");
    assert!(step.error, "the failed confirmation is an error span");
    assert!(
        step.status_message.starts_with("notification_failed"),
        "{}",
        step.status_message
    );
    let attempts = named(&spans, "notification deliver");
    assert_eq!(attempts.len(), 3, "retried within its bound, no more");
    assert!(attempts.iter().all(|a| a.error));
    assert!(
        spans.iter().all(|s| !s.name.starts_with("compensate ")),
        "nothing is compensated"
    );
    let saga = one(&spans, "saga checkout");
    assert_eq!(saga.attr("checkout.outcome"), Some("completed"));
    assert!(!saga.error);

    // The money and the order stand; no confirmation was recorded.
    assert_eq!(
        stack.ledger(checkout.checkout_id).await,
        vec![("charge".into(), 600)]
    );
    assert_eq!(stack.orders(checkout.checkout_id).await, vec!["created"]);
    let status: String = sqlx::query_scalar("SELECT status FROM saga.sagas WHERE saga_id = $1")
        .bind(checkout.checkout_id)
        .fetch_one(&stack.pool)
        .await
        .unwrap();
    assert_eq!(status, "completed");

    // An event on the saga for watchers: the step event of the confirmation, with its code.
    let js = async_nats::jetstream::new(client.nats().clone());
    let lifecycle = js
        .get_stream(checkout_shared::streams::LIFECYCLE_STREAM)
        .await
        .unwrap();
    let last = lifecycle
        .get_last_raw_message_by_subject(&subjects::lifecycle(checkout.checkout_id, "step"))
        .await
        .unwrap();
    let event: LifecycleEvent = serde_json::from_slice(&last.payload).unwrap();
    assert_eq!(event.step, Some(Step::Notification));
    assert!(
        event.detail.starts_with("notification_failed"),
        "{}",
        event.detail
    );

    // Counted, once, as failed.
    let counted = receiver()
        .wait_until(Duration::from_secs(30), |r| {
            r.metric(m::NOTIFICATIONS.name).iter().any(|p| {
                p.resource.get("test.run") == Some(&run)
                    && p.attributes.get(m::STEP_OUTCOME).map(String::as_str) == Some("failed")
                    && p.number() == 1.0
            })
        })
        .await;
    assert!(counted, "checkout.notifications{{saga.outcome=failed}} = 1");
    stack.stop().await;
}
