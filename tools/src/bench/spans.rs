//! The spans a saga makes, per service, derived from the current plan's steps: what the
//! benchmark expects to receive, so that a span lost or added shows.
//!
//! ```text
//!  PlanId::CURRENT.steps() ──▶ the commands a saga of each outcome sends (step, do|undo)
//!  per command ──▶ the orchestrator's 4 spans, the worker's 4 and its own (worker_spans)
//! ```

use super::drive::{Ended, Outcome};
use checkout_orchestrator::saga::PlanId;
use checkout_shared::{Phase, Step};
use std::collections::BTreeMap;

/// The service name of the client's spans (a worker's is its step's name).
const CLIENT: &str = "checkout-client";
/// The service name of the orchestrator's spans.
const ORCHESTRATOR: &str = "orchestrator";
/// The service name of the broker's hop spans, which `checkout nats-trace-bridge` makes.
const BROKER: &str = "nats-server";

/// The orchestrator's spans of a saga besides its commands': its process span of the request,
/// its validation span, the saga's "started" span and its full-length span.
const ORCHESTRATOR_PER_SAGA: u64 = 4;
/// The orchestrator's spans per command: its publish, its process span of the reply, and the
/// step's (or the compensation's) "started" and full-length spans.
const ORCHESTRATOR_PER_COMMAND: u64 = 4;
/// A worker's spans per command it handles: its process span, its transaction span, its
/// action (or undo) span and its reply's publish.
const WORKER_PER_COMMAND: u64 = 4;
/// The cart lines of a bench checkout.
const BENCH_CART_LINES: u64 = 1;
/// The step whose refusal makes the bench's compensated sagas: their card is declined.
const BENCH_REFUSED_STEP: Step = Step::Payment;

/// The spans a worker of `step` makes for one command in `phase`. Exhaustive: a new step does
/// not compile until its own spans are counted here.
fn worker_spans(step: Step, phase: Phase) -> u64 {
    let own = match step {
        // A span per cart line when reserving; a release has none.
        Step::Inventory => match phase {
            Phase::Do => BENCH_CART_LINES,
            Phase::Undo => 0,
        },
        // The card gateway's call when charging; a refund does not call it.
        Step::Payment => match phase {
            Phase::Do => 1,
            Phase::Undo => 0,
        },
        Step::Order => 0,
        // Its delivery attempt (it has no undo).
        Step::Notification => 1,
    };
    WORKER_PER_COMMAND + own
}

/// Spans one saga of `outcome` makes, per service, with every span exported, derived from the
/// current plan's steps: the client's publish; the orchestrator's own and its share of each
/// command; each command's worker spans. A completed saga sends every step's action (its
/// follow-ups included); a compensated one (card declined) the actions up to the refused
/// step, then the undos of the steps before it. A failed saga expects none (it may have ended
/// anywhere). A change to the trace's shape changes these, and the benchmark then reports
/// spans as missing or extra until they are updated. With `broker_hops` (every message of the
/// saga traced by nats-server), the broker's span of each hop too: the request, and each
/// command and its reply.
pub fn expected_spans_per_saga(outcome: Outcome, broker_hops: bool) -> BTreeMap<String, u64> {
    let plan = PlanId::CURRENT.steps();
    let commands: Vec<(Step, Phase)> = match outcome {
        Outcome::Completed => plan.iter().map(|s| (*s, Phase::Do)).collect(),
        Outcome::Compensated => {
            let before: Vec<Step> = plan
                .iter()
                .copied()
                .take_while(|s| *s != BENCH_REFUSED_STEP)
                .collect();
            let actions = before.iter().chain([&BENCH_REFUSED_STEP]);
            let undos = before.iter().rev().filter(|s| s.has_undo());
            actions
                .map(|s| (*s, Phase::Do))
                .chain(undos.map(|s| (*s, Phase::Undo)))
                .collect()
        }
        Outcome::Failed => return BTreeMap::new(),
    };
    let mut spans = BTreeMap::from([
        (CLIENT.to_owned(), 1),
        (
            ORCHESTRATOR.to_owned(),
            ORCHESTRATOR_PER_SAGA + ORCHESTRATOR_PER_COMMAND * commands.len() as u64,
        ),
    ]);
    if broker_hops {
        spans.insert(BROKER.to_owned(), 1 + 2 * commands.len() as u64);
    }
    for (step, phase) in commands {
        *spans.entry(step.as_str().to_owned()).or_default() += worker_spans(step, phase);
    }
    spans
}

/// The expected spans of sagas that ended as `ended`, per service.
pub fn expected_spans<'a>(
    ended: impl Iterator<Item = &'a Ended>,
    broker_hops: bool,
) -> BTreeMap<String, u64> {
    let per_outcome = [Outcome::Completed, Outcome::Compensated, Outcome::Failed]
        .map(|outcome| (outcome, expected_spans_per_saga(outcome, broker_hops)));
    let mut expected = BTreeMap::new();
    for e in ended {
        let Some((_, per_service)) = per_outcome.iter().find(|(o, _)| *o == e.outcome) else {
            continue;
        };
        for (service, n) in per_service {
            *expected.entry(service.clone()).or_default() += n;
        }
    }
    expected
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_expected_spans_derived_from_the_plan_are_the_measured_ones() {
        let named = |pairs: &[(&str, u64)]| -> BTreeMap<String, u64> {
            pairs.iter().map(|(s, n)| ((*s).to_owned(), *n)).collect()
        };
        assert_eq!(
            expected_spans_per_saga(Outcome::Completed, false),
            named(&[
                ("checkout-client", 1),
                ("orchestrator", 20),
                ("inventory", 5),
                ("payment", 5),
                ("order", 4),
                ("notification", 5),
            ])
        );
        assert_eq!(
            expected_spans_per_saga(Outcome::Compensated, false),
            named(&[
                ("checkout-client", 1),
                ("orchestrator", 16),
                ("inventory", 9),
                ("payment", 5),
            ])
        );
        assert_eq!(expected_spans_per_saga(Outcome::Failed, false), named(&[]));
        // The broker's hops: the request, then a command and a reply per step sent (the
        // broker-hop test sees 9 for a completed checkout).
        let with_hops = |outcome| expected_spans_per_saga(outcome, true)["nats-server"];
        assert_eq!(with_hops(Outcome::Completed), 9);
        assert_eq!(with_hops(Outcome::Compensated), 7);
        assert!(expected_spans_per_saga(Outcome::Failed, true).is_empty());
    }
}
