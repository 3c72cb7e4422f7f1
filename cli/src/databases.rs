//! Where each owner's schema lives. Every owner (the saga store, each worker's schema, the
//! gateway's idempotency keys) reads its own PostgreSQL URL, `<SCHEMA>_DATABASE_URL`, which
//! defaults to the shared `DATABASE_URL`; so each may sit on a server of its own. No owner
//! reads another's schema, so no process needs more than its own URL.
//!
//! ```text
//!  checkout orchestrator, show, stuck, retry ─▶ SAGA_DATABASE_URL          ─┐
//!  checkout worker inventory                 ─▶ INVENTORY_DATABASE_URL     ─┤ each unset:
//!  checkout worker payment                   ─▶ PAYMENT_DATABASE_URL       ─┤ DATABASE_URL
//!  checkout worker order                     ─▶ ORDERS_DATABASE_URL        ─┤
//!  checkout worker notification              ─▶ NOTIFICATION_DATABASE_URL  ─┤
//!  checkout gateway                          ─▶ GATEWAY_DATABASE_URL       ─┘
//! ```
//!
//! Each URL carries its own TLS settings, as libpq's do (`sslmode`, `sslrootcert`, `sslcert`,
//! `sslkey`): `?sslmode=verify-full&sslrootcert=<CA file>` encrypts and verifies the server.

use crate::common::DbArgs;
use checkout_shared::Step;
use clap::Args;

/// The environment variable of the shared URL, every owner's default.
pub const SHARED_URL_VAR: &str = "DATABASE_URL";
/// The environment variable of the saga store's URL (schema `saga`).
pub const SAGA_URL_VAR: &str = "SAGA_DATABASE_URL";
/// The environment variable of the gateway's URL (schema `gateway`).
pub const GATEWAY_URL_VAR: &str = "GATEWAY_DATABASE_URL";

/// The schema of the saga store, which the orchestrator owns.
pub const SAGA_SCHEMA: &str = "saga";
/// The schema of the gateway's idempotency keys.
pub const GATEWAY_SCHEMA: &str = "gateway";

/// The environment variable of a worker's URL: `<SCHEMA>_DATABASE_URL`, after the schema the
/// step's worker owns (`ORDERS_DATABASE_URL` for `checkout worker order`).
pub fn worker_url_var(kind: Step) -> &'static str {
    // Spelled out, not formatted, so clap's `env =` below can name the same constants; the
    // unit test holds each to the step's schema.
    match kind {
        Step::Inventory => "INVENTORY_DATABASE_URL",
        Step::Payment => "PAYMENT_DATABASE_URL",
        Step::Order => "ORDERS_DATABASE_URL",
        Step::Notification => "NOTIFICATION_DATABASE_URL",
    }
}

/// Every owner's variable with its schema: the saga store's, each worker's, the gateway's.
pub fn owner_url_vars() -> Vec<(&'static str, &'static str)> {
    let workers = Step::ALL.iter().map(|s| (s.schema(), worker_url_var(*s)));
    [(SAGA_SCHEMA, SAGA_URL_VAR)]
        .into_iter()
        .chain(workers)
        .chain([(GATEWAY_SCHEMA, GATEWAY_URL_VAR)])
        .collect()
}

/// The environment for a child process whose every schema is in the one database `url`:
/// the shared variable and every owner's, so none inherited from the caller's environment
/// sends a private stack's service to another database.
pub fn one_database_env(url: &str) -> Vec<(String, String)> {
    [SHARED_URL_VAR]
        .into_iter()
        .chain(owner_url_vars().into_iter().map(|(_, var)| var))
        .map(|var| (var.to_owned(), url.to_owned()))
        .collect()
}

/// The environment for the orchestrator and the workers a tool starts (the demo): every
/// owner's URL resolved, so each service finds its own whatever it inherits.
pub fn services_env(
    db: &DbArgs,
    saga: &SagaDbArgs,
    workers: &WorkerDbArgs,
) -> Vec<(String, String)> {
    let owners = Step::ALL
        .iter()
        .map(|kind| (worker_url_var(*kind), workers.url(*kind, db)));
    [
        (SHARED_URL_VAR, db.database_url.as_str()),
        (SAGA_URL_VAR, saga.url(db)),
    ]
    .into_iter()
    .chain(owners)
    .map(|(var, url)| (var.to_owned(), url.to_owned()))
    .collect()
}

/// A URL as it may be printed: the password, if any, hidden (`postgres://u:***@h/db`).
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    match rest[..at].split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***{}", &rest[at..]),
        None => url.to_owned(),
    }
}

/// The saga store's own URL (the orchestrator's, and `show`, `stuck`, `retry`'s).
#[derive(Debug, Clone, Args)]
pub struct SagaDbArgs {
    /// PostgreSQL URL of the saga store (schema saga), when it is not --database-url's.
    #[arg(long, env = "SAGA_DATABASE_URL")]
    pub saga_database_url: Option<String>,
}

impl SagaDbArgs {
    /// The saga store's URL: its own, else the shared one.
    pub fn url<'a>(&'a self, shared: &'a DbArgs) -> &'a str {
        self.saga_database_url
            .as_deref()
            .unwrap_or(&shared.database_url)
    }
}

/// Each worker kind's own URL. A worker uses its kind's and ignores the others, so one
/// environment (a compose anchor, a config map) can hold them all.
#[derive(Debug, Clone, Args)]
pub struct WorkerDbArgs {
    /// PostgreSQL URL of the inventory worker's schema (inventory), when it is not
    /// --database-url's.
    #[arg(long, env = "INVENTORY_DATABASE_URL")]
    pub inventory_database_url: Option<String>,
    /// PostgreSQL URL of the payment worker's schema (payment), when it is not
    /// --database-url's.
    #[arg(long, env = "PAYMENT_DATABASE_URL")]
    pub payment_database_url: Option<String>,
    /// PostgreSQL URL of the order worker's schema (orders), when it is not --database-url's.
    #[arg(long, env = "ORDERS_DATABASE_URL")]
    pub orders_database_url: Option<String>,
    /// PostgreSQL URL of the notification worker's schema (notification), when it is not
    /// --database-url's.
    #[arg(long, env = "NOTIFICATION_DATABASE_URL")]
    pub notification_database_url: Option<String>,
}

impl WorkerDbArgs {
    /// The URL of `kind`'s schema: its own, else the shared one.
    pub fn url<'a>(&'a self, kind: Step, shared: &'a DbArgs) -> &'a str {
        let own = match kind {
            Step::Inventory => &self.inventory_database_url,
            Step::Payment => &self.payment_database_url,
            Step::Order => &self.orders_database_url,
            Step::Notification => &self.notification_database_url,
        };
        own.as_deref().unwrap_or(&shared.database_url)
    }
}

/// The gateway's own URL.
#[derive(Debug, Clone, Args)]
pub struct GatewayDbArgs {
    /// PostgreSQL URL of the gateway's idempotency keys (schema gateway), when it is not
    /// --database-url's.
    #[arg(long, env = "GATEWAY_DATABASE_URL")]
    pub gateway_database_url: Option<String>,
}

impl GatewayDbArgs {
    /// The gateway's URL: its own, else the shared one.
    pub fn url<'a>(&'a self, shared: &'a DbArgs) -> &'a str {
        self.gateway_database_url
            .as_deref()
            .unwrap_or(&shared.database_url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Debug, Parser)]
    struct Every {
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        saga: SagaDbArgs,
        #[command(flatten)]
        workers: WorkerDbArgs,
        #[command(flatten)]
        gateway: GatewayDbArgs,
    }

    /// The variable each option reads, by the option's long name.
    fn env_of(long: &str) -> String {
        let command = Every::command();
        let arg = command
            .get_arguments()
            .find(|a| a.get_long() == Some(long))
            .unwrap_or_else(|| panic!("no --{long}"));
        arg.get_env()
            .map(|e| e.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    #[test]
    fn each_owner_reads_the_variable_named_after_its_schema() {
        for (schema, var) in owner_url_vars() {
            assert_eq!(var, format!("{}_DATABASE_URL", schema.to_uppercase()));
            assert_eq!(env_of(&format!("{schema}-database-url")), var);
        }
        assert_eq!(env_of("database-url"), SHARED_URL_VAR);
    }

    #[test]
    fn an_owner_without_a_url_of_its_own_uses_the_shared_one() {
        let every = Every::parse_from([
            "x",
            "--database-url",
            "postgres://shared/db",
            "--payment-database-url",
            "postgres://pay/db",
            "--saga-database-url",
            "postgres://saga/db",
        ]);
        assert_eq!(every.saga.url(&every.db), "postgres://saga/db");
        assert_eq!(
            every.workers.url(Step::Payment, &every.db),
            "postgres://pay/db"
        );
        for kind in [Step::Inventory, Step::Order, Step::Notification] {
            assert_eq!(every.workers.url(kind, &every.db), "postgres://shared/db");
        }
        assert_eq!(every.gateway.url(&every.db), "postgres://shared/db");
    }

    #[test]
    fn printed_urls_hide_only_the_password() {
        assert_eq!(
            redact("postgres://u:pw@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("postgres://h/db?x=a@b"), "postgres://h/db?x=a@b");
    }

    #[test]
    fn one_database_env_sets_every_owner() {
        let env = one_database_env("postgres://h/db");
        assert_eq!(env.len(), owner_url_vars().len() + 1);
        assert!(env.iter().all(|(_, url)| url == "postgres://h/db"));
    }
}
