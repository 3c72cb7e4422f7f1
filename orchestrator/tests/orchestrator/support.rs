//! What every orchestrator test needs: a broker, a database, timings and a saga.

pub use async_nats::jetstream;
pub use checkout_harness::{NatsServer, TestDb};
pub use checkout_orchestrator::executor::{Executor, Timing};
pub use checkout_orchestrator::machine::{Input, SagaStatus};
pub use checkout_orchestrator::saga::SagaData;
pub use checkout_orchestrator::store;
pub use checkout_orchestrator::{OrchestratorConfig, store::migrate};
pub use checkout_shared::envelope::MSG_ID;
pub use checkout_shared::messages::{CheckoutRequested, LineItem, Outcome};
pub use checkout_shared::telemetry::SpanFlusher;
pub use checkout_shared::{Phase, Step};
pub use sqlx::PgPool;
pub use std::time::Duration;
pub use tokio_util::sync::CancellationToken;
pub use uuid::Uuid;

pub const FAST: Timing = Timing {
    step_timeout: Duration::from_millis(300),
    max_step_timeout: Duration::from_millis(600),
    max_attempts: 3,
    stuck_after: Duration::from_millis(1_500),
};

pub fn data() -> SagaData {
    SagaData::new(CheckoutRequested {
        checkout_id: Uuid::new_v4(),
        customer_id: "c".into(),
        items: vec![LineItem {
            sku: "SKU-A".into(),
            quantity: 1,
            unit_price_cents: None,
        }],
        payment_token: "tok".into(),
        amount_cents: 10,
        currency: "EUR".into(),
    })
}

/// Deadlines far enough away that only recovery can send.
pub const SLOW: Timing = Timing {
    step_timeout: Duration::from_secs(3_600),
    max_step_timeout: Duration::from_secs(3_600),
    max_attempts: 3,
    stuck_after: Duration::from_secs(3_600),
};

pub fn config(nats: &NatsServer, db: &TestDb) -> OrchestratorConfig {
    OrchestratorConfig {
        // In process: the administrator, by the URL's credentials (see the workers' tests).
        nats_url: nats.admin_url(),
        database_url: db.url(),
        concurrency: 4,
        max_connections: 4,
        replicas: 1,
        timing: FAST,
        retention: checkout_shared::retention::Retention::default(),
    }
}

pub async fn setup() -> (NatsServer, TestDb, PgPool, jetstream::Context) {
    let nats = NatsServer::start_async().await.unwrap();
    let db = TestDb::create().await.unwrap();
    let pool = PgPool::connect(&db.url()).await.unwrap();
    migrate(&pool).await.unwrap();
    let js = jetstream::new(nats.admin_client().await.unwrap());
    checkout_shared::streams::provision(&js, 1).await.unwrap();
    (nats, db, pool, js)
}

/// The ids of the commands in the command stream, oldest first (read without consuming:
/// a work-queue stream admits no second consumer).
pub async fn commands(js: &jetstream::Context, subject: &str) -> Vec<String> {
    let mut stream = js.get_stream("CHECKOUT_COMMANDS").await.unwrap();
    let state = stream.info().await.unwrap().state.clone();
    let prefix = subject.trim_end_matches('>');
    let mut ids = Vec::new();
    for seq in state.first_sequence..=state.last_sequence {
        let Ok(message) = stream.get_raw_message(seq).await else {
            continue;
        };
        if message.subject.as_str().starts_with(prefix) {
            ids.push(
                message
                    .headers
                    .get(MSG_ID)
                    .map(|v| v.as_str().to_owned())
                    .unwrap_or_default(),
            );
        }
    }
    ids
}

/// One warning the orchestrator logged, by field name (the message under `message`).
pub type Warning = std::collections::BTreeMap<String, String>;

static WARNINGS: std::sync::Mutex<Vec<Warning>> = std::sync::Mutex::new(Vec::new());

struct CaptureWarnings;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CaptureWarnings {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if *event.metadata().level() != tracing::Level::WARN {
            return;
        }
        struct Fields(Warning);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.insert(field.name().to_owned(), format!("{value:?}"));
            }
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                self.0.insert(field.name().to_owned(), value.to_owned());
            }
        }
        let mut fields = Fields(Warning::new());
        event.record(&mut fields);
        WARNINGS.lock().unwrap().push(fields.0);
    }
}

/// Captures the process's warnings from now on (once per test process).
pub fn capture_warnings() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        use tracing_subscriber::layer::SubscriberExt;
        let subscriber = tracing_subscriber::registry().with(CaptureWarnings);
        tracing::subscriber::set_global_default(subscriber).unwrap();
    });
}

/// Every warning captured so far with `field` equal to `value` (the tests run side by side,
/// so each picks its own by a saga id).
pub fn warnings_with(field: &str, value: &str) -> Vec<Warning> {
    WARNINGS
        .lock()
        .unwrap()
        .iter()
        .filter(|w| w.get(field).map(String::as_str) == Some(value))
        .cloned()
        .collect()
}
