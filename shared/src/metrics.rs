//! Every metric the checkout emits, in one place: names, kinds, units, descriptions and the
//! attributes each may carry, and a typed handle whose methods record them.
//!
//! ```text
//!  orchestrator ─ saga_started/saga_finished/step_finished/... ─┐
//!  workers      ─ redelivered/dead_lettered ────────────────────┼─▶ Metrics ─▶ global meter ─▶ OTLP
//!  shared       ─ sent/consumed/processed (messaging semconv) ──┘
//! ```
//!
//! Attribute values come from closed sets (`&'static str`, a [`Step`], a [`Phase`], a subject
//! of our own streams), never from saga or customer ids, so cardinality stays bounded.
//! [`INSTRUMENTS`] is read by the tests that check the Grafana dashboard against the code.

use crate::{Phase, Step};
use opentelemetry::KeyValue;
use opentelemetry::global;
use opentelemetry::metrics::{Counter, Histogram, Meter, ObservableUpDownCounter};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// What kind of instrument a metric is (decides its Prometheus suffixes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Monotonic sum (`_total` in Prometheus).
    Counter,
    /// Non-monotonic sum (a gauge in Prometheus).
    UpDownCounter,
    /// Explicit-bucket histogram (`_bucket`, `_sum`, `_count`).
    Histogram,
}

/// One metric's definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instrument {
    /// OpenTelemetry name.
    pub name: &'static str,
    /// Instrument kind.
    pub kind: Kind,
    /// UCUM unit (`s`, or an annotation such as `{saga}`).
    pub unit: &'static str,
    /// Description.
    pub description: &'static str,
    /// The attributes it may carry.
    pub attributes: &'static [&'static str],
}

/// Attribute: how a saga ended (`completed`, `compensated`, `failed`, `rejected`).
pub const OUTCOME: &str = "checkout.outcome";
/// Attribute: the step (`inventory.reserve`, ...).
pub const STEP: &str = "checkout.step";
/// Attribute: `do` or `undo`.
pub const PHASE: &str = "saga.phase";
/// Attribute: how a step ended (`succeeded`, `failed`, `compensated`), as on step spans.
pub const STEP_OUTCOME: &str = "saga.outcome";
/// Attribute: a stable reason code (never free text).
pub const REASON: &str = "checkout.reason";

macro_rules! instrument {
    ($id:ident, $name:literal, $kind:ident, $unit:literal, $desc:literal, [$($attr:expr),*]) => {
        #[doc = $desc]
        pub const $id: Instrument = Instrument {
            name: $name,
            kind: Kind::$kind,
            unit: $unit,
            description: $desc,
            attributes: &[$($attr),*],
        };
    };
}

instrument!(
    SAGAS,
    "checkout.sagas",
    Counter,
    "{saga}",
    "Checkouts that ended, by outcome.",
    [OUTCOME]
);
instrument!(
    DURATION,
    "checkout.duration",
    Histogram,
    "s",
    "Time from a saga's start to its end.",
    [OUTCOME]
);
instrument!(
    STEP_DURATION,
    "checkout.step.duration",
    Histogram,
    "s",
    "Time from sending a step's command (or undo) to applying its reply.",
    [STEP, PHASE, STEP_OUTCOME]
);
instrument!(
    VALUE,
    "checkout.value",
    Histogram,
    "{cent}",
    "Amount of the checkouts that ended, in cents.",
    [OUTCOME]
);
instrument!(
    COMPENSATIONS,
    "checkout.compensations",
    Counter,
    "{compensation}",
    "Undos that finished, by the step undone.",
    [STEP]
);
instrument!(
    IN_FLIGHT,
    "checkout.in_flight",
    UpDownCounter,
    "{saga}",
    "Sagas running or compensating, as stored in the saga table.",
    []
);
instrument!(
    ABANDONED,
    "checkout.abandoned",
    Counter,
    "{saga}",
    "Checkouts that started and will not complete, by the step that failed.",
    [STEP]
);
instrument!(
    REDELIVERIES,
    "checkout.redeliveries",
    Counter,
    "{message}",
    "Messages handed back for redelivery (nak), by reason code.",
    [REASON]
);
instrument!(
    DEAD_LETTERS,
    "checkout.dead_letters",
    Counter,
    "{message}",
    "Messages moved to the dead letters, by reason code.",
    [REASON]
);
instrument!(
    REJECTIONS,
    "checkout.rejections",
    Counter,
    "{checkout}",
    "Checkout requests rejected at the door, by reason code.",
    [REASON]
);
instrument!(
    SENT,
    "messaging.client.sent.messages",
    Counter,
    "{message}",
    "Messages published to JetStream (acked or failed).",
    [
        "messaging.system",
        "messaging.operation.name",
        "messaging.destination.name",
        "error.type"
    ]
);
instrument!(
    CONSUMED,
    "messaging.client.consumed.messages",
    Counter,
    "{message}",
    "Messages delivered to a consumer of this process.",
    [
        "messaging.system",
        "messaging.operation.name",
        "messaging.destination.name",
        "messaging.consumer.group.name"
    ]
);
instrument!(
    PROCESS_DURATION,
    "messaging.process.duration",
    Histogram,
    "s",
    "Time spent handling one delivered message, settlement included.",
    [
        "messaging.system",
        "messaging.operation.name",
        "messaging.destination.name",
        "messaging.consumer.group.name"
    ]
);

/// Every metric, for tests and documentation.
pub const INSTRUMENTS: [Instrument; 13] = [
    SAGAS,
    DURATION,
    STEP_DURATION,
    VALUE,
    COMPENSATIONS,
    IN_FLIGHT,
    ABANDONED,
    REDELIVERIES,
    DEAD_LETTERS,
    REJECTIONS,
    SENT,
    CONSUMED,
    PROCESS_DURATION,
];

/// Bucket bounds of the order value, in cents (5 € ... 1,000 €).
pub const VALUE_BUCKETS: [f64; 8] = [
    500.0, 1_000.0, 2_000.0, 5_000.0, 10_000.0, 20_000.0, 50_000.0, 100_000.0,
];
/// Bucket bounds of durations, in seconds: the SDK's default buckets are meant for
/// milliseconds and would put every saga in the first few.
pub const SECONDS_BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// How a saga ended, for `checkout.outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SagaOutcome {
    /// Every step done.
    Completed,
    /// A step failed and every undo ran.
    Compensated,
    /// An undo could not finish: stuck, waiting for an operator.
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

    /// A step (or its undo) ended: `outcome` is `succeeded`, `failed` or `compensated`.
    pub fn step_finished(&self, step: Step, phase: Phase, outcome: &'static str, took: Duration) {
        let attrs = [
            kv(STEP, step.name()),
            kv(PHASE, phase.as_str()),
            kv(STEP_OUTCOME, outcome),
        ];
        self.step_duration.record(took.as_secs_f64(), &attrs);
    }

    /// The undo of `step` finished.
    pub fn compensated(&self, step: Step) {
        self.compensations.add(1, &[kv(STEP, step.name())]);
    }

    /// A checkout will not complete because `step` failed.
    pub fn abandoned(&self, step: Step) {
        self.abandoned.add(1, &[kv(STEP, step.name())]);
    }

    /// A message was handed back for redelivery; `reason` is a stable code.
    pub fn redelivered(&self, reason: &'static str) {
        self.redeliveries.add(1, &[kv(REASON, reason)]);
    }

    /// A message was stored in the dead letters; `reason` is a stable code.
    pub fn dead_lettered(&self, reason: &'static str) {
        self.dead_letters.add(1, &[kv(REASON, reason)]);
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
