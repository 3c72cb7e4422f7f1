//! A command delivered again after it was done: the worker replays its stored decision, and
//! the delivery's process span says so (`saga.replayed`), so that a trace tells the delivery
//! that did the work from the ones that only answered again. The chaos audit relies on it.

use crate::support::{Options, Stack, receiver, request};
use checkout_harness::SpanKind;
use checkout_shared::envelope::Envelope;
use checkout_shared::messages::{Command, CommandMessage, LineItem};
use checkout_shared::{Phase, Step, subjects};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_done_before_is_replayed_under_a_span_that_says_so() {
    let stack = Stack::start(Options::default()).await;
    let client = stack.client().await;
    let checkout = request("cust-replay", "tok_visa", &[("SKU-MUG", 1)], 700);
    let (outcome, _trace) = stack.checkout(&client, &checkout).await;
    assert_eq!(outcome, "completed");
    let saga_id = checkout.checkout_id;

    // The saga's reservation again, under a re-send's id (as after a reply that was lost).
    let first_id = format!("{saga_id}.inventory.do");
    let again_id = format!("{first_id}.r9");
    let js = async_nats::jetstream::new(stack.admin_client().await);
    let mut headers = async_nats::HeaderMap::new();
    Envelope::command(saga_id, Step::Inventory, Phase::Do).write(&mut headers, &again_id);
    let body = CommandMessage {
        saga_id,
        command: Command::ReserveInventory {
            items: vec![LineItem {
                sku: "SKU-MUG".into(),
                quantity: 1,
                unit_price_cents: None,
            }],
        },
    };
    let payload = serde_json::to_vec(&body).unwrap().into();
    let subject = subjects::command(Step::Inventory, Phase::Do);
    let ack = js.publish_with_headers(subject, headers, payload).await;
    ack.unwrap().await.unwrap();

    let process_of = |msg_id: String| {
        move |spans: &[checkout_harness::ReceivedSpan]| {
            spans
                .iter()
                .find(|s| {
                    s.kind == SpanKind::Consumer
                        && s.attr("messaging.message.id") == Some(msg_id.as_str())
                })
                .map(|s| s.attr("saga.replayed").map(str::to_owned))
        }
    };
    let replayed = process_of(again_id.clone());
    assert!(
        receiver()
            .wait_for(Duration::from_secs(20), |spans| replayed(spans).is_some())
            .await,
        "no process span for {again_id}"
    );
    let spans = receiver().spans();
    assert_eq!(
        replayed(&spans),
        Some(Some("true".to_owned())),
        "the redelivery's span says it replayed"
    );
    assert_eq!(
        process_of(first_id)(&spans),
        Some(None),
        "the delivery that did the work does not"
    );
    assert_eq!(stack.stock("SKU-MUG").await, 999, "reserved once, of 1,000");
    stack.stop().await;
}
