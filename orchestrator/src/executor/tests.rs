//! The real executor (machine, plans, message ids, envelopes, the reply gate, the due check,
//! recovery) against in-memory fakes of its store and transport, under any interleaving of
//! lost, duplicated, redelivered and late messages, deadlines, crashes before a send,
//! recoveries and operators' retries.

use super::fakes::{Broker, Clock, Handling, MemStore, Workers};
use super::{Executor, Timing};
use crate::machine::{Input, SagaStatus};
use crate::saga::SagaData;
use checkout_shared::messages::{CheckoutRequested, LineItem, Reply};
use checkout_shared::{CommandId, Step};
use proptest::prelude::*;
use std::sync::atomic::Ordering;
use std::time::Duration;
use uuid::Uuid;

const TIMING: Timing = Timing {
    step_timeout: Duration::from_secs(1),
    max_step_timeout: Duration::from_secs(8),
    max_attempts: 3,
    stuck_after: Duration::from_secs(30),
};

#[derive(Debug, Clone)]
enum Event {
    /// The broker hands the i-th queued command to its worker and removes it.
    Deliver(usize),
    /// The broker hands it over but keeps it (its ack was lost): it comes again.
    Redeliver(usize),
    /// The i-th queued command is lost.
    LoseCommand(usize),
    /// The i-th reply in flight reaches the executor.
    Reply(usize),
    /// The i-th reply in flight is lost.
    LoseReply(usize),
    /// A reply seen before arrives again.
    OldReply(usize),
    /// Time passes (seconds), and the deadline scanner runs.
    Tick(u8),
    /// The process dies between its next commit and its publish; a new one recovers.
    CrashBeforeSend,
    /// An operator retries the saga (it applies only if flagged stuck).
    OperatorRetry,
    /// The worker of the i-th queued command cannot reach its database: no decision, no
    /// reply, and the broker redelivers the command later.
    FailToAct(usize),
    /// The i-th queued command is delivered, and refused if it is an undo.
    RefuseUndo(usize),
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        6 => (0usize..4).prop_map(Event::Deliver),
        1 => (0usize..4).prop_map(Event::Redeliver),
        1 => (0usize..4).prop_map(Event::LoseCommand),
        6 => (0usize..4).prop_map(Event::Reply),
        1 => (0usize..4).prop_map(Event::LoseReply),
        1 => (0usize..16).prop_map(Event::OldReply),
        2 => (1u8..40).prop_map(Event::Tick),
        1 => Just(Event::CrashBeforeSend),
        1 => Just(Event::OperatorRetry),
        1 => (0usize..4).prop_map(Event::FailToAct),
        1 => (0usize..4).prop_map(Event::RefuseUndo),
    ]
}

struct World {
    executor: Executor<MemStore, Broker>,
    store: MemStore,
    broker: Broker,
    clock: Clock,
    workers: Workers,
    /// Replies in flight, each with the command it answers (`Saga-Command-Id`), as the
    /// real workers name it: the executor applies only those its saga sent.
    replies: Vec<(Reply, CommandId)>,
    seen: Vec<(Reply, CommandId)>,
    refuse: Option<Step>,
    saga_id: Uuid,
}

fn pick<T>(items: &mut Vec<T>, i: usize) -> Option<T> {
    (!items.is_empty()).then(|| items.remove(i % items.len()))
}

impl World {
    async fn new(refuse: Option<Step>) -> World {
        let clock = Clock::new();
        let store = MemStore::new(clock.clone());
        let broker = Broker::default();
        let (executor, _exported) = Executor::with(store.clone(), broker.clone(), TIMING);
        let request = CheckoutRequested {
            checkout_id: Uuid::new_v4(),
            customer_id: "c".into(),
            items: vec![LineItem {
                sku: "A".into(),
                quantity: 1,
                unit_price_cents: None,
            }],
            payment_token: "t".into(),
            amount_cents: 100,
            currency: "EUR".into(),
        };
        let saga_id = request.checkout_id;
        let started = executor
            .start(SagaData::new(request), &opentelemetry::Context::new())
            .await;
        assert!(matches!(started, Ok(true)));
        World {
            executor,
            store,
            broker,
            clock,
            workers: Workers::default(),
            replies: vec![],
            seen: vec![],
            refuse,
            saga_id,
        }
    }

    fn status(&self) -> SagaStatus {
        self.store
            .row(self.saga_id)
            .map(|r| r.state.status)
            .expect("the saga exists")
    }

    /// Whether the saga still waits for anything: a reply to a step, or to its follow-up.
    fn waiting(&self) -> bool {
        self.store
            .row(self.saga_id)
            .is_some_and(|r| r.state.status.is_active() || r.state.follow_up)
    }

    async fn apply(&mut self, input: Input) {
        // A failed send is healed by a deadline or by recovery; the test goes on.
        let _ = self
            .executor
            .apply_at(self.saga_id, input, self.clock.now())
            .await;
    }

    /// A reply reaches the executor, through its gate as the service's replies do.
    async fn answer(&mut self, (reply, command): (Reply, CommandId)) {
        // A failed send is healed by a deadline or by recovery; the test goes on.
        let _ = self
            .executor
            .apply_reply_at(reply, &command, self.clock.now())
            .await;
    }

    async fn deliver(&mut self, i: usize, keep: bool, handling: Handling) {
        let command = {
            let mut queue = self.broker.queue.lock().expect("queue");
            if queue.is_empty() {
                return;
            }
            let i = i % queue.len();
            if keep {
                queue[i].clone()
            } else {
                queue.remove(i)
            }
        };
        if let Some(reply) = self.workers.handle(&command, self.refuse, handling) {
            let answers = command.msg_id.parse().expect("the executor's command id");
            self.replies.push((reply, answers));
        }
    }

    async fn step(&mut self, event: Event) {
        match event {
            Event::Deliver(i) => self.deliver(i, false, Handling::Normal).await,
            Event::Redeliver(i) => self.deliver(i, true, Handling::Normal).await,
            Event::FailToAct(i) => self.deliver(i, true, Handling::FailToAct).await,
            Event::RefuseUndo(i) => self.deliver(i, false, Handling::RefuseUndo).await,
            Event::LoseCommand(i) => {
                pick(&mut self.broker.queue.lock().expect("queue"), i);
            }
            Event::Reply(i) => {
                if let Some(reply) = pick(&mut self.replies, i) {
                    self.seen.push(reply.clone());
                    self.answer(reply).await;
                }
            }
            Event::LoseReply(i) => {
                pick(&mut self.replies, i);
            }
            Event::OldReply(i) => {
                if let Some(reply) = self.seen.get(i % self.seen.len().max(1)).cloned() {
                    self.answer(reply).await;
                }
            }
            Event::Tick(secs) => {
                self.clock
                    .advance(chrono::Duration::seconds(i64::from(secs)));
                for due in self.executor.due(16).await.unwrap_or_default() {
                    let _ = self
                        .executor
                        .apply_at(
                            due,
                            Input::Timeout {
                                waited: Duration::ZERO,
                            },
                            self.clock.now(),
                        )
                        .await;
                }
            }
            Event::CrashBeforeSend => {
                self.broker.fail_next_send.store(true, Ordering::SeqCst);
                let _ = self.executor.recover().await;
            }
            Event::OperatorRetry => self.apply(Input::OperatorRetry).await,
        }
    }

    /// After the chaos, a fair world: everything is delivered, time passes.
    async fn settle(&mut self) {
        self.broker.fail_next_send.store(false, Ordering::SeqCst);
        for _ in 0..200 {
            if !self.waiting() {
                return;
            }
            self.step(Event::Deliver(0)).await;
            self.step(Event::Reply(0)).await;
            if self.broker.queue.lock().expect("queue").is_empty() && self.replies.is_empty() {
                self.step(Event::Tick(10)).await;
            }
        }
    }
}

fn run(refuse: Option<Step>, script: Vec<Event>) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let mut world = World::new(refuse).await;
        for event in script {
            world.step(event).await;
        }
        world.settle().await;
        let status = world.status();
        prop_assert!(
            matches!(
                status,
                SagaStatus::Completed | SagaStatus::Compensated | SagaStatus::Failed
            ),
            "ended {status:?}"
        );
        prop_assert!(!world.waiting(), "still waiting after a fair settle");
        // The executor names one action per step and phase, whatever it re-sends (new
        // message ids, fresh generations): what keeps the workers' records from letting an
        // action act twice.
        prop_assert!(
            world.workers.received.values().all(|keys| keys.len() == 1),
            "one step and phase sent under several action keys: {:?}",
            world.workers.received
        );
        prop_assert!(
            world.workers.applied.values().all(|n| *n == 1),
            "an action key applied twice: {:?}",
            world.workers.applied
        );
        // The confirmation is fire-and-forget: given up on after its bound, it may or may
        // not have happened; it is never undone, and it never decides the checkout's end.
        let mut effects = world.workers.effects.clone();
        effects.remove(&Step::Notification);
        match status {
            SagaStatus::Completed => prop_assert_eq!(effects.len(), 3),
            _ => prop_assert!(effects.is_empty(), "left behind: {:?}", effects),
        }
        let ended_as_expected = match refuse {
            // Refused at once, or timed out first (then undone, as it may have happened).
            Some(Step::Inventory) => matches!(status, SagaStatus::Failed | SagaStatus::Compensated),
            Some(Step::Payment | Step::Order) => status == SagaStatus::Compensated,
            None | Some(Step::Notification) => {
                matches!(status, SagaStatus::Completed | SagaStatus::Compensated)
            }
        };
        prop_assert!(ended_as_expected, "refused {refuse:?}, ended {status:?}");
        prop_assert!(
            status != SagaStatus::Compensated
                || !world.workers.effects.contains(&Step::Notification),
            "a compensated checkout sent a confirmation"
        );
        // An undo has no refusal: one refused is sent again until it succeeds, so a saga
        // whose undos were refused still ends compensated, with nothing left behind (above).
        if world.workers.undo_refusals > 0 {
            prop_assert_eq!(status, SagaStatus::Compensated);
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// For any failure point and any pattern of lost, duplicated and late messages,
    /// deadlines, crashes and retries, the saga ends completed or fully compensated, and no
    /// action or undo acts twice.
    #[test]
    fn a_saga_always_ends_whole(
        refuse in prop::option::of(prop::sample::select(Step::ALL.to_vec())),
        script in prop::collection::vec(event(), 0..60),
    ) {
        run(refuse, script)?;
    }
}
