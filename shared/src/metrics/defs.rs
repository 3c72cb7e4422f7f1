//! The definitions: each metric's name, kind, unit, description and attributes, and the
//! bucket bounds of the histograms.

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
/// Attribute: the step, by its name (`inventory`, `payment`, ...).
pub const STEP: &str = "checkout.step";
/// Attribute: `do` or `undo`.
pub const PHASE: &str = "saga.phase";
/// Attribute: how a step ended (`succeeded`, `failed`, `compensated`), as on step spans.
pub const STEP_OUTCOME: &str = "saga.outcome";
/// Attribute: a stable reason code (never free text).
pub const REASON: &str = "checkout.reason";
/// Attribute: the schema of a pruned table (`saga`, `payment`, `gateway`, ...).
pub const DB_NAMESPACE: &str = "db.namespace";
/// Attribute: the pruned table (`sagas`, `processed_messages`, `idempotency_keys`).
pub const DB_TABLE: &str = "db.collection.name";

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
    "Checkout requests rejected at the door and workers' replies refused, by reason code.",
    [REASON]
);
instrument!(
    NOTIFICATIONS,
    "checkout.notifications",
    Counter,
    "{notification}",
    "Order confirmations that ended, by outcome (sent, failed); a failed one never fails the checkout.",
    [STEP_OUTCOME]
);
instrument!(
    PRUNED,
    "checkout.pruned",
    Counter,
    "{row}",
    "Rows deleted by the retention policy, by schema and table.",
    [DB_NAMESPACE, DB_TABLE]
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
pub const INSTRUMENTS: [Instrument; 15] = [
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
    NOTIFICATIONS,
    PRUNED,
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
