use super::*;
use checkout_shared::Step;
use checkout_shared::messages::StepRef;

/// An event as the orchestrator sends it: what ended, how, and where the saga stands.
fn event(
    saga_id: Uuid,
    kind: LifecycleKind,
    step: Option<(Step, Phase)>,
    detail: &str,
) -> WatchEvent {
    let status = match kind {
        LifecycleKind::Completed => SagaStatus::Completed,
        LifecycleKind::Compensated => SagaStatus::Compensated,
        LifecycleKind::Failed => SagaStatus::Failed,
        LifecycleKind::Stuck => SagaStatus::Stuck,
        LifecycleKind::Rejected => SagaStatus::Rejected,
        LifecycleKind::Started | LifecycleKind::Step => SagaStatus::Running,
    };
    let outcome = step.map(|(_, phase)| StepOutcome::of(phase, detail == "ok"));
    WatchEvent::Lifecycle(LifecycleEvent {
        saga_id,
        kind,
        status: Some(status),
        step: step.map(|(s, _)| s),
        phase: step.map(|(_, p)| p),
        outcome,
        next: None,
        failure_code: None,
        rejection: None,
        field: None,
        detail: detail.to_owned(),
        trace_id: format!("trace-{saga_id}"),
    })
}

/// The same event, with the saga's status and the step it now waits for.
fn then(event: WatchEvent, status: SagaStatus, next: Option<(Step, Phase)>) -> WatchEvent {
    let WatchEvent::Lifecycle(mut event) = event else {
        unreachable!()
    };
    event.status = Some(status);
    event.next = next.map(|(step, phase)| StepRef { step, phase });
    WatchEvent::Lifecycle(event)
}

fn line(model: &Model, saga_id: Uuid) -> SagaLine {
    model
        .recent()
        .find(|l| l.saga_id == saga_id)
        .cloned()
        .expect("saga listed")
}

#[test]
fn a_completed_saga_walks_its_steps_and_records_its_duration() {
    let t0 = Instant::now();
    let mut model = Model::new(t0);
    let id = Uuid::new_v4();
    let running = SagaStatus::Running;
    let ok = |s| Some((s, Phase::Do));
    let started = event(id, LifecycleKind::Started, None, "");
    model.apply(&then(started, running, ok(Step::Inventory)), t0);
    assert_eq!(line(&model, id).step, "inventory");
    assert_eq!(line(&model, id).state, SagaStatus::Running);
    assert_eq!(model.in_flight(), 1);

    let reserved = event(id, LifecycleKind::Step, ok(Step::Inventory), "ok");
    model.apply(&then(reserved, running, ok(Step::Payment)), t0);
    assert_eq!(line(&model, id).step, "payment", "the next step is in hand");
    assert_eq!(line(&model, id).detail, "inventory ok");
    let charged = event(id, LifecycleKind::Step, ok(Step::Payment), "ok");
    model.apply(&then(charged, running, ok(Step::Order)), t0);
    model.apply(&event(id, LifecycleKind::Step, ok(Step::Order), "ok"), t0);
    assert_eq!(line(&model, id).step, "order", "the last step stays shown");
    let end = t0 + Duration::from_millis(120);
    model.apply(&event(id, LifecycleKind::Completed, None, ""), end);

    let done = line(&model, id);
    assert_eq!(done.state, SagaStatus::Completed);
    assert_eq!(done.took, Some(Duration::from_millis(120)));
    assert_eq!(done.trace_id, format!("trace-{id}"));
    assert_eq!(model.count_of("completed"), 1);
    assert_eq!(model.count_of("compensated"), 0);
    assert_eq!(model.in_flight(), 0);
    assert_eq!(model.percentile(0.5), Some(Duration::from_millis(120)));
}

#[test]
fn a_failed_step_turns_the_saga_to_compensating_with_its_reason() {
    let t0 = Instant::now();
    let mut model = Model::new(t0);
    let id = Uuid::new_v4();
    model.apply(&event(id, LifecycleKind::Started, None, ""), t0);
    let inventory = Some((Step::Inventory, Phase::Do));
    model.apply(&event(id, LifecycleKind::Step, inventory, "ok"), t0);
    let payment = Some((Step::Payment, Phase::Do));
    let undo = Some((Step::Inventory, Phase::Undo));
    let declined = event(id, LifecycleKind::Step, payment, "card declined");
    model.apply(&then(declined, SagaStatus::Compensating, undo), t0);
    let failed = line(&model, id);
    assert_eq!(failed.state, SagaStatus::Compensating);
    assert_eq!(failed.step, "undo inventory");
    assert_eq!(failed.detail, "card declined");
    assert_eq!(failed.view.reason.as_deref(), Some("card declined"));

    let released = event(id, LifecycleKind::Step, undo, "ok");
    model.apply(&then(released, SagaStatus::Compensating, None), t0);
    assert_eq!(line(&model, id).step, "undo inventory");
    let end = t0 + Duration::from_millis(80);
    model.apply(
        &event(id, LifecycleKind::Compensated, None, "card declined"),
        end,
    );
    let done = line(&model, id);
    assert_eq!(done.state, SagaStatus::Compensated);
    assert_eq!(done.detail, "card declined");
    assert_eq!(model.count_of("compensated"), 1);
    assert_eq!(model.count_of("completed"), 0);
}

#[test]
fn the_recent_list_is_capped_and_shows_the_latest_change_first() {
    let t0 = Instant::now();
    let mut model = Model::new(t0);
    let ids: Vec<Uuid> = (0..RECENT_CAP + 50).map(|_| Uuid::new_v4()).collect();
    for id in &ids {
        model.apply(&event(*id, LifecycleKind::Started, None, ""), t0);
    }
    assert_eq!(model.recent().count(), RECENT_CAP);
    assert_eq!(
        model.recent().next().map(|l| l.saga_id),
        ids.last().copied()
    );
    // An event for a listed saga brings it to the front rather than adding a line.
    let older = ids[ids.len() - 10];
    model.apply(&event(older, LifecycleKind::Completed, None, ""), t0);
    assert_eq!(model.recent().count(), RECENT_CAP);
    assert_eq!(model.recent().next().map(|l| l.saga_id), Some(older));
}

#[test]
fn start_times_of_sagas_that_never_end_are_bounded() {
    let t0 = Instant::now();
    let mut model = Model::new(t0);
    for _ in 0..IN_FLIGHT_CAP + 100 {
        model.apply(&event(Uuid::new_v4(), LifecycleKind::Started, None, ""), t0);
    }
    assert_eq!(model.in_flight(), IN_FLIGHT_CAP);
}

#[test]
fn percentiles_cover_the_last_minute_only() {
    let t0 = Instant::now();
    let mut model = Model::new(t0);
    for ms in 1..=100u64 {
        let id = Uuid::new_v4();
        model.apply(&event(id, LifecycleKind::Started, None, ""), t0);
        let end = t0 + Duration::from_millis(ms);
        model.apply(&event(id, LifecycleKind::Completed, None, ""), end);
    }
    assert_eq!(model.percentile(0.5), Some(Duration::from_millis(50)));
    assert_eq!(model.percentile(0.99), Some(Duration::from_millis(99)));
    model.prune(t0 + Duration::from_secs(61));
    assert_eq!(model.percentile(0.5), None, "a minute later they are gone");
    assert_eq!(
        model.count_of("completed"),
        100,
        "counts are since the start"
    );
}

#[test]
fn rates_are_per_second_over_the_window_and_fall_when_quiet() {
    let t0 = Instant::now();
    let mut model = Model::new(t0);
    for i in 0..30u64 {
        let id = Uuid::new_v4();
        let at = t0 + Duration::from_millis(i * 300);
        model.apply(&event(id, LifecycleKind::Started, None, ""), at);
        model.apply(&event(id, LifecycleKind::Compensated, None, "no"), at);
    }
    model.apply(&WatchEvent::Rejected("bad".into()), t0);
    let ten = t0 + Duration::from_secs(10);
    assert!((model.rate_of("compensated", ten) - 3.0).abs() < 1e-9);
    assert!((model.rate_of("rejected", ten) - 0.1).abs() < 1e-9);
    assert_eq!(model.rate_of("completed", ten), 0.0);
    let later = t0 + Duration::from_secs(130);
    model.prune(later);
    assert_eq!(model.rate_of("compensated", later), 0.0);
}

#[test]
fn rejections_dead_letters_and_stuck_sagas_are_counted() {
    let t0 = Instant::now();
    let mut model = Model::new(t0);
    model.apply(&WatchEvent::Rejected("quantity".into()), t0);
    model.apply(&WatchEvent::DeadLetter("checkout.dlq.x".into()), t0);
    let id = Uuid::new_v4();
    model.apply(&event(id, LifecycleKind::Started, None, ""), t0);
    model.apply(&event(id, LifecycleKind::Stuck, None, "refund failed"), t0);
    assert_eq!(model.count_of("rejected"), 1);
    assert_eq!(model.count_of("dead_letter"), 1);
    assert_eq!(model.count_of("stuck"), 1);
    assert_eq!(line(&model, id).state, SagaStatus::Stuck);
    assert_eq!(model.in_flight(), 1, "a stuck saga may still end");
}

#[test]
fn a_confirmation_that_failed_after_completion_leaves_the_saga_completed() {
    let t0 = Instant::now();
    let mut model = Model::new(t0);
    let id = Uuid::new_v4();
    model.apply(&event(id, LifecycleKind::Started, None, ""), t0);
    for step in [Step::Inventory, Step::Payment, Step::Order] {
        model.apply(
            &event(id, LifecycleKind::Step, Some((step, Phase::Do)), "ok"),
            t0,
        );
    }
    model.apply(
        &then(
            event(id, LifecycleKind::Completed, None, ""),
            SagaStatus::Completed,
            None,
        ),
        t0,
    );
    let failed = "notification_failed: not sent after 3 attempts";
    let confirmation = Some((Step::Notification, Phase::Do));
    let not_sent = event(id, LifecycleKind::Step, confirmation, failed);
    model.apply(&then(not_sent, SagaStatus::Completed, None), t0);
    let done = line(&model, id);
    assert_eq!(done.state, SagaStatus::Completed, "the checkout stands");
    assert_eq!(done.detail, format!("notification {failed}"));
    assert_eq!(model.count_of("completed"), 1);
}

#[test]
fn a_saga_refused_at_its_first_step_is_counted_failed() {
    let t0 = Instant::now();
    let mut model = Model::new(t0);
    let id = Uuid::new_v4();
    model.apply(&event(id, LifecycleKind::Started, None, ""), t0);
    let refusal = "out_of_stock: SKU-RARE wants 4, 3 available";
    let first = Some((Step::Inventory, Phase::Do));
    model.apply(&event(id, LifecycleKind::Step, first, refusal), t0);
    model.apply(&event(id, LifecycleKind::Failed, None, refusal), t0);
    assert_eq!(line(&model, id).state, SagaStatus::Failed);
    assert_eq!(model.count_of("failed"), 1);
    assert_eq!(model.count_of("compensated"), 0);
}

#[test]
fn a_checkout_refused_at_the_door_is_listed_with_its_code_and_field_and_counted_once() {
    let t0 = Instant::now();
    let mut model = Model::new(t0);
    let id = Uuid::new_v4();
    let WatchEvent::Lifecycle(mut refused) = event(
        id,
        LifecycleKind::Rejected,
        None,
        r#"unknown sku "SKU-NOPE""#,
    ) else {
        unreachable!()
    };
    refused.rejection = Some(checkout_shared::RejectionCode::UnknownSku);
    refused.field = Some("items[1].sku".into());
    // Its request on checkout.rejected, and its lifecycle event (twice: delivered again).
    model.apply(&WatchEvent::Rejected(refused.detail.clone()), t0);
    for _ in 0..2 {
        model.apply(&WatchEvent::Lifecycle(refused.clone()), t0);
    }
    let listed = line(&model, id);
    assert_eq!(listed.state, SagaStatus::Rejected);
    assert_eq!(
        listed.detail,
        r#"rejected unknown_sku items[1].sku: unknown sku "SKU-NOPE""#
    );
    assert_eq!(model.count_of("rejected"), 1, "one refused checkout");
    assert_eq!(model.in_flight(), 0, "it never started");
}

#[test]
fn stuck_sagas_and_the_oldest_running_one_are_listed_until_they_end() {
    let t0 = Instant::now();
    let mut model = Model::new(t0);
    let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
    let at = |secs: u64| t0 + Duration::from_secs(secs);
    model.apply(&event(first, LifecycleKind::Started, None, ""), at(0));
    model.apply(&event(second, LifecycleKind::Started, None, ""), at(1));
    let reason = "payment undo has not succeeded for 300s; still retrying";
    model.apply(&event(first, LifecycleKind::Stuck, None, reason), at(2));
    model.apply(&event(first, LifecycleKind::Stuck, None, reason), at(3));

    let stuck = model.stuck();
    assert_eq!(stuck.len(), 1, "flagged once, listed once: {stuck:?}");
    assert_eq!((stuck[0].saga_id, stuck[0].since), (first, at(2)));
    assert_eq!(stuck[0].reason, reason);
    let oldest = model.oldest_running(at(5)).expect("two in flight");
    assert_eq!(
        (oldest.saga_id, oldest.running_for),
        (first, Duration::from_secs(5))
    );

    model.apply(
        &event(first, LifecycleKind::Compensated, None, "refused"),
        at(6),
    );
    assert!(model.stuck().is_empty(), "ended: no longer stuck");
    let oldest = model.oldest_running(at(7)).expect("one in flight");
    assert_eq!(
        (oldest.saga_id, oldest.running_for),
        (second, Duration::from_secs(6))
    );
    model.apply(&event(second, LifecycleKind::Completed, None, ""), at(8));
    assert_eq!(model.oldest_running(at(9)), None);
}
