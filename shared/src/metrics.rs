//! Every metric the checkout emits, in one place: names, kinds, units, descriptions and the
//! attributes each may carry, and a typed handle whose methods record them.
//!
//! ```text
//!  orchestrator ─ saga_started/saga_finished/step_finished/... ─┐
//!  workers      ─ redelivered/dead_lettered ────────────────────┼─▶ Metrics ─▶ global meter ─▶ OTLP
//!  shared       ─ sent/consumed/processed (messaging semconv) ──┤
//!  every pruner ─ pruned (retention) ───────────────────────────┘
//! ```
//!
//! Attribute values come from closed sets (`&'static str`, a [`Step`], a [`Phase`], a subject
//! of our own streams), never from saga or customer ids, so cardinality stays bounded.
//! [`INSTRUMENTS`] is read by the tests that check the Grafana dashboard against the code.

use crate::{Phase, Step, StepOutcome};
use opentelemetry::KeyValue;
use opentelemetry::global;
use opentelemetry::metrics::{Counter, Histogram, Meter, ObservableUpDownCounter};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

mod defs;

pub use defs::*;

/// How a saga ended, for `checkout.outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SagaOutcome {
    /// Every step done.
    Completed,
    /// A step failed and every undo ran.
    Compensated,
    /// The first step refused, with nothing to undo.
    Failed,
    /// Refused before a saga started.
    Rejected,
}

impl SagaOutcome {
    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            SagaOutcome::Completed => "completed",
            SagaOutcome::Compensated => "compensated",
            SagaOutcome::Failed => "failed",
            SagaOutcome::Rejected => "rejected",
        }
    }
}

/// The instruments, built from the global meter provider.
#[derive(Debug)]
pub struct Metrics {
    meter: Meter,
    sagas: Counter<u64>,
    duration: Histogram<f64>,
    step_duration: Histogram<f64>,
    value: Histogram<f64>,
    compensations: Counter<u64>,
    abandoned: Counter<u64>,
    redeliveries: Counter<u64>,
    dead_letters: Counter<u64>,
    rejections: Counter<u64>,
    notifications: Counter<u64>,
    pruned: Counter<u64>,
    sent: Counter<u64>,
    consumed: Counter<u64>,
    process_duration: Histogram<f64>,
    in_flight: Mutex<Option<ObservableUpDownCounter<i64>>>,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// The process's metrics. The first call binds them to the global meter provider, so
/// [`crate::telemetry::init`] makes that call itself, right after installing the provider.
pub fn get() -> &'static Metrics {
    METRICS.get_or_init(|| Metrics::new(global::meter("checkout-saga")))
}

fn counter(meter: &Meter, def: Instrument) -> Counter<u64> {
    meter
        .u64_counter(def.name)
        .with_unit(def.unit)
        .with_description(def.description)
        .build()
}

fn histogram(meter: &Meter, def: Instrument, buckets: &[f64]) -> Histogram<f64> {
    meter
        .f64_histogram(def.name)
        .with_unit(def.unit)
        .with_description(def.description)
        .with_boundaries(buckets.to_vec())
        .build()
}

fn kv(key: &'static str, value: impl Into<opentelemetry::Value>) -> KeyValue {
    KeyValue::new(key, value)
}

impl Metrics {
    /// Builds every instrument on `meter`.
    pub fn new(meter: Meter) -> Self {
        Metrics {
            sagas: counter(&meter, SAGAS),
            duration: histogram(&meter, DURATION, &SECONDS_BUCKETS),
            step_duration: histogram(&meter, STEP_DURATION, &SECONDS_BUCKETS),
            value: histogram(&meter, VALUE, &VALUE_BUCKETS),
            compensations: counter(&meter, COMPENSATIONS),
            abandoned: counter(&meter, ABANDONED),
            redeliveries: counter(&meter, REDELIVERIES),
            dead_letters: counter(&meter, DEAD_LETTERS),
            rejections: counter(&meter, REJECTIONS),
            notifications: counter(&meter, NOTIFICATIONS),
            pruned: counter(&meter, PRUNED),
            sent: counter(&meter, SENT),
            consumed: counter(&meter, CONSUMED),
            process_duration: histogram(&meter, PROCESS_DURATION, &SECONDS_BUCKETS),
            in_flight: Mutex::new(None),
            meter,
        }
    }

    /// A saga reached an end: counts it, its duration and its amount by outcome.
    pub fn saga_finished(&self, outcome: SagaOutcome, duration: Duration, amount_cents: i64) {
        let attrs = [kv(OUTCOME, outcome.as_str())];
        self.sagas.add(1, &attrs);
        self.duration.record(duration.as_secs_f64(), &attrs);
        self.value.record(amount_cents as f64, &attrs);
    }

    /// A request was rejected before any saga started; `reason` is a stable code.
    pub fn rejected(&self, reason: &'static str) {
        self.sagas
            .add(1, &[kv(OUTCOME, SagaOutcome::Rejected.as_str())]);
        self.rejections.add(1, &[kv(REASON, reason)]);
    }

    /// A worker's reply was refused (never applied): counted under the refusal's code, and
    /// not as a rejected checkout, since its saga goes on.
    pub fn reply_refused(&self, reason: crate::ReplyRefusal) {
        self.rejections.add(1, &[kv(REASON, reason.as_str())]);
    }

    /// A step (or its undo) ended: `outcome` is `succeeded`, `failed` or `compensated`.
    pub fn step_finished(&self, step: Step, phase: Phase, outcome: StepOutcome, took: Duration) {
        let attrs = [
            kv(STEP, step.as_str()),
            kv(PHASE, phase.as_str()),
            kv(STEP_OUTCOME, outcome.as_str()),
        ];
        self.step_duration.record(took.as_secs_f64(), &attrs);
    }

    /// The undo of `step` finished.
    pub fn compensated(&self, step: Step) {
        self.compensations.add(1, &[kv(STEP, step.as_str())]);
    }

    /// A checkout will not complete because `step` failed.
    pub fn abandoned(&self, step: Step) {
        self.abandoned.add(1, &[kv(STEP, step.as_str())]);
    }

    /// A fire-and-forget confirmation ended: `outcome` is `sent` or `failed`.
    pub fn notification(&self, outcome: &'static str) {
        self.notifications.add(1, &[kv(STEP_OUTCOME, outcome)]);
    }

    /// A message was handed back for redelivery; `reason` is a stable code.
    pub fn redelivered(&self, reason: &'static str) {
        self.redeliveries.add(1, &[kv(REASON, reason)]);
    }

    /// A message was stored in the dead letters; `reason` is a stable code.
    pub fn dead_lettered(&self, reason: &'static str) {
        self.dead_letters.add(1, &[kv(REASON, reason)]);
    }

    /// The retention policy deleted `rows` of `schema`.`table`.
    pub fn pruned(&self, schema: &'static str, table: &'static str, rows: u64) {
        let attrs = [kv(DB_NAMESPACE, schema), kv(DB_TABLE, table)];
        self.pruned.add(rows, &attrs);
    }

    /// A publish to `subject` (one of our streams' subjects) was acked or failed.
    pub fn sent(&self, subject: &str, ok: bool) {
        let mut attrs = vec![
            kv("messaging.system", crate::messaging::SYSTEM),
            kv("messaging.operation.name", "publish"),
            kv("messaging.destination.name", subject.to_owned()),
        ];
        if !ok {
            attrs.push(kv("error.type", "publish_failed"));
        }
        self.sent.add(1, &attrs);
    }

    /// A message from `subject` reached `consumer` and was handled in `took`.
    pub fn consumed(&self, subject: &str, consumer: &str, took: Duration) {
        let attrs = [
            kv("messaging.system", crate::messaging::SYSTEM),
            kv("messaging.operation.name", "process"),
            kv("messaging.destination.name", subject.to_owned()),
            kv("messaging.consumer.group.name", consumer.to_owned()),
        ];
        self.consumed.add(1, &attrs);
        self.process_duration.record(took.as_secs_f64(), &attrs);
    }

    /// Reports `checkout.in_flight` from `count` (set by whoever knows it, e.g. a poll of
    /// the saga table); negative means "not known yet" and reports nothing. Once per process.
    pub fn observe_in_flight(&self, count: Arc<AtomicI64>) {
        let Ok(mut slot) = self.in_flight.lock() else {
            return;
        };
        if slot.is_some() {
            return;
        }
        let instrument = self
            .meter
            .i64_observable_up_down_counter(IN_FLIGHT.name)
            .with_unit(IN_FLIGHT.unit)
            .with_description(IN_FLIGHT.description)
            .with_callback(move |observer| {
                let value = count.load(Ordering::Relaxed);
                if value >= 0 {
                    observer.observe(value, &[]);
                }
            })
            .build();
        *slot = Some(instrument);
    }
}

#[cfg(test)]
mod tests;
