//! Recovery after a crash, messages JetStream gave up on, and two orchestrators at once.

use crate::support::*;
use checkout_shared::LogEvent;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_sends_the_command_a_recorded_transition_implied() {
    let (nats, db, pool, js) = setup().await;
    // What an orchestrator leaves behind when killed after its commit, before its publish.
    let client = nats.admin_client().await.unwrap();
    let (recorder, _exported) = Executor::new(pool.clone(), client, SpanFlusher::disabled(), SLOW);
    let data = data();
    let saga_id = data.request.checkout_id;
    let recorded = recorder
        .record_start(data, &opentelemetry::Context::new())
        .await
        .unwrap();
    assert!(recorded.is_some());
    assert!(commands(&js, "checkout.cmd.inventory.>").await.is_empty());
    // The spans that parent the saga's work are stored with it, for recovery to emit.
    let pending: Vec<Vec<String>> = store::pending_spans(&pool)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, _, spans)| spans.into_iter().map(|s| s.name).collect())
        .collect();
    assert_eq!(
        pending,
        [["saga checkout started", "step inventory.reserve started"]],
        "the saga's and its first step's started spans wait in its row"
    );

    let stop = CancellationToken::new();
    let config = config(&nats, &db);
    let orchestrator = tokio::spawn(checkout_orchestrator::run(
        config,
        SpanFlusher::disabled(),
        stop.clone(),
    ));
    let mut sent = Vec::new();
    for _ in 0..100 {
        sent = commands(&js, "checkout.cmd.inventory.>").await;
        if !sent.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        sent,
        vec![format!("{saga_id}.inventory.do")],
        "the reservation is sent on start-up"
    );
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(20), orchestrator)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    pool.close().await;
    db.drop_db().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_out_of_deliveries_is_moved_to_the_dead_letters() {
    let (nats, db, pool, js) = setup().await;
    let stop = CancellationToken::new();
    let config = config(&nats, &db);
    let orchestrator = tokio::spawn(checkout_orchestrator::run(
        config,
        SpanFlusher::disabled(),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(MSG_ID, "poison.order.do");
    js.publish_with_headers("checkout.cmd.order.create", headers, "{}".into())
        .await
        .unwrap()
        .await
        .unwrap();
    // A worker that takes the message and dies every time, until JetStream gives up.
    let topology = checkout_shared::streams::Topology::load().unwrap();
    let def = topology.consumer("order").unwrap();
    let consumer = checkout_shared::streams::bind_consumer(&js, def)
        .await
        .unwrap();
    for _ in 0..def.max_deliver {
        let mut batch = consumer
            .fetch()
            .max_messages(1)
            .expires(Duration::from_secs(2))
            .messages()
            .await
            .unwrap();
        let message = futures::StreamExt::next(&mut batch).await.unwrap().unwrap();
        message
            .ack_with(jetstream::AckKind::Nak(None))
            .await
            .unwrap();
    }
    // The next pull is when JetStream notices the message is out of deliveries.
    let mut batch = consumer
        .fetch()
        .max_messages(1)
        .expires(Duration::from_secs(1))
        .messages()
        .await
        .unwrap();
    assert!(
        futures::StreamExt::next(&mut batch).await.is_none(),
        "not delivered again"
    );
    let dlq = js.get_stream("CHECKOUT_DLQ").await.unwrap();
    let mut letter = None;
    for _ in 0..50 {
        if let Ok(found) = dlq
            .get_last_raw_message_by_subject("checkout.dlq.checkout.cmd.order.create")
            .await
        {
            letter = Some(found);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let letter = letter.expect("the message reached the dead letters");
    let reason = letter
        .headers
        .get(checkout_shared::envelope::REASON)
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default();
    assert!(reason.contains("gave up after 10 deliveries"), "{reason}");
    assert!(
        commands(&js, "checkout.cmd.order.>").await.is_empty(),
        "removed from the queue"
    );
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(20), orchestrator)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    pool.close().await;
    db.drop_db().await.unwrap();
}

/// Two orchestrators on one database, each remembering the rows it wrote: an input planned on
/// a row another one has moved on since is never lost, and never applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_orchestrators_apply_each_reply_once_whatever_each_remembers() {
    let (nats, db, pool, _js) = setup().await;
    let connect = || async {
        let client = nats.admin_client().await.unwrap();
        Executor::new(pool.clone(), client, SpanFlusher::disabled(), SLOW).0
    };
    let (a, b) = (connect().await, connect().await);
    let data = data();
    let saga_id = data.request.checkout_id;
    assert!(a.start(data, &opentelemetry::Context::new()).await.unwrap());
    let reply = |step| Input::Reply {
        step,
        phase: Phase::Do,
        outcome: Outcome::StepSucceeded { reference: None },
    };
    let running = Some(SagaStatus::Running);
    assert_eq!(
        b.apply(saga_id, reply(Step::Inventory)).await.unwrap(),
        running
    );
    // A remembers the saga at its start, where a payment reply means nothing: it must look
    // again rather than drop the reply.
    assert_eq!(
        a.apply(saga_id, reply(Step::Payment)).await.unwrap(),
        running
    );
    let version = || async { store::get(&pool, saga_id).await.unwrap().unwrap().version };
    assert_eq!(version().await, 3, "the payment reply was applied by A");
    // B remembers it before the payment: a duplicate of that reply planned there must not
    // be written over the row A wrote.
    assert_eq!(
        b.apply(saga_id, reply(Step::Payment)).await.unwrap(),
        running
    );
    assert_eq!(version().await, 3, "and not again by B");
    let log = store::log(&pool, saga_id).await.unwrap();
    let succeeded: Vec<_> = log
        .iter()
        .filter(|entry| entry.event == LogEvent::Succeeded)
        .map(|entry| entry.step.clone().unwrap_or_default())
        .collect();
    assert_eq!(succeeded, ["inventory", "payment"], "{log:?}");
    pool.close().await;
    db.drop_db().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmation_forgets_only_its_own_transitions_spans_and_the_sweep_finds_the_rest() {
    // What a transition whose answer was lost leaves: written, with its spans pending, and
    // nobody to emit them. The next transition's confirmation must not forget them, and the
    // sweep must find them once they are old enough, however old.
    let (nats, db, pool, _js) = setup().await;
    let client = nats.admin_client().await.unwrap();
    let (executor, _exported) = Executor::new(pool.clone(), client, SpanFlusher::disabled(), SLOW);
    let data = data();
    let saga_id = data.request.checkout_id;
    executor
        .start(data, &opentelemetry::Context::new())
        .await
        .unwrap();
    for step in [Step::Inventory, Step::Payment] {
        let reply = Input::Reply {
            step,
            phase: Phase::Do,
            outcome: Outcome::StepSucceeded { reference: None },
        };
        executor.apply(saga_id, reply).await.unwrap();
    }
    let pending = || async {
        let mut found: Vec<(i64, usize)> = store::pending_spans(&pool)
            .await
            .unwrap()
            .into_iter()
            .map(|(_, version, spans)| (version, spans.len()))
            .collect();
        found.sort();
        found
    };
    assert_eq!(
        pending().await,
        vec![(1, 2), (2, 2), (3, 2)],
        "the saga's and its first step's started spans, then each step's span and the next \
         step's started span, by version"
    );
    // Only the first and the last transitions (versions 1 and 3) are confirmed exported.
    store::clear_pending(&pool, &[(saga_id, 1), (saga_id, 3)])
        .await
        .unwrap();
    assert_eq!(
        pending().await,
        vec![(2, 2)],
        "the unconfirmed transition's spans stay"
    );

    let stale = |age_secs: f64| {
        let pool = pool.clone();
        async move {
            sqlx::query(
                "UPDATE saga.sagas SET pending_spans = (SELECT jsonb_object_agg(key, \
                   jsonb_set(value, '{at}', to_jsonb(extract(epoch FROM now()) - $1))) \
                 FROM jsonb_each(pending_spans)) WHERE pending_spans IS NOT NULL",
            )
            .bind(age_secs)
            .execute(&pool)
            .await
            .unwrap();
            store::stale_pending_spans(&pool, Duration::from_secs(10), 100)
                .await
                .unwrap()
                .into_iter()
                .map(|(id, version, spans)| (id, version, spans.len()))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        stale(2.0).await,
        vec![],
        "too fresh: its writer is still at it"
    );
    assert_eq!(stale(15.0).await, vec![(saga_id, 2, 2)], "pending for 15 s");
    assert_eq!(
        stale(3_600.0).await,
        vec![(saga_id, 2, 2)],
        "pending for an hour: still owed to the trace"
    );
    store::clear_pending(&pool, &[(saga_id, 2)]).await.unwrap();
    let cleared: Option<serde_json::Value> =
        sqlx::query_scalar("SELECT pending_spans FROM saga.sagas WHERE saga_id = $1")
            .bind(saga_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        cleared, None,
        "nothing left pending: the column is empty again"
    );
    pool.close().await;
    db.drop_db().await.unwrap();
}
