//! The workers' `*_once` statements by group commit: the actions of every message in hand
//! that call the same function are one statement and one commit
//! ([`checkout_shared::group_commit`]).
//!
//! The statement calls the function once per action, in the order the actions came, inside
//! one transaction: a later call sees an earlier one's writes (two deliveries of one command
//! in one batch: the second replays the first's reply), and the locks the functions take are
//! held to the commit. Before any call, the statement of a batch takes every lock the batch
//! will need in one global order (the function's `lock_*` prelude: every saga's advisory lock
//! by key, then, for inventory, every stock row by SKU; an action alone takes its own locks in
//! that order, and needs no prelude), so batches of different instances never wait on
//! each other in a cycle: a batch used to lock cart after cart in arrival order, and two
//! instances' batches deadlocked on the rows they shared. A batch that still fails as a whole
//! (one action's error) runs again one action at a time, so an error is only ever the error
//! of the action that caused it; such a fallback is logged ([`FELL_BACK`]), and the benchmark
//! counts those lines.

use crate::inventory::LineDecision;
use checkout_shared::group_commit::GroupCommit;
use checkout_shared::messages::Reply;
use serde_json::Value;
use sqlx::PgPool;
use sqlx::types::Json;
use std::collections::BTreeMap;

/// Actions per batch at most.
const MAX_BATCH: usize = 128;

/// One `*_once` function: its statements over a JSON array of argument arrays.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct OnceFn {
    /// For a batch: every lock first, in the global order, then the calls.
    batch: &'static str,
    /// For one action: the call alone, which takes its own locks in the global order (its
    /// saga's, then its rows by key), so it needs no prelude and costs none.
    alone: &'static str,
}

/// The message of the warning logged when a group statement failed and its actions run again
/// one at a time (the benchmark counts the lines that carry it).
pub const FELL_BACK: &str = "group statement failed; running each action alone";

/// `SELECT n, reply, replayed, lines` over `$1`, a JSON array whose elements are one call's
/// arguments as an array (`o.a`), each read with its SQL type (a JSON `null` is SQL `NULL`).
/// In a batch, the calls are read from what `$lock` returns (the batch itself, once it holds
/// every lock the batch needs, in the global order), so none runs before the locks are all
/// taken.
macro_rules! once_fn {
    ($lock:literal, $call:literal, $lines:literal) => {
        OnceFn {
            batch: concat!(
                "SELECT o.n, f.reply, f.replayed, ",
                $lines,
                " AS lines FROM ",
                $lock,
                "($1::jsonb) AS k(calls) \
                 CROSS JOIN LATERAL jsonb_array_elements(k.calls) WITH ORDINALITY AS o(a, n) \
                 CROSS JOIN LATERAL ",
                $call,
                " AS f ORDER BY o.n"
            ),
            alone: concat!(
                "SELECT o.n, f.reply, f.replayed, ",
                $lines,
                " AS lines FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS o(a, n) \
                 CROSS JOIN LATERAL ",
                $call,
                " AS f ORDER BY o.n"
            ),
        }
    };
}

/// `(key, saga, reply, items, reservation)`.
pub static RESERVE: OnceFn = once_fn!(
    "inventory.lock_reserves",
    "inventory.reserve_once(o.a->>0, (o.a->>1)::uuid, o.a->2, o.a->3, (o.a->>4)::uuid)",
    "f.lines"
);
/// `(key, saga, reply, tombstone)`.
pub static RELEASE: OnceFn = once_fn!(
    "inventory.lock_releases",
    "inventory.release_once(o.a->>0, (o.a->>1)::uuid, o.a->2, (o.a->>3)::uuid)",
    "NULL::jsonb"
);
/// `(key, saga, reply, refusal, entry, customer, amount)`.
pub static CHARGE: OnceFn = once_fn!(
    "payment.lock_sagas",
    "payment.charge_once(o.a->>0, (o.a->>1)::uuid, o.a->2, nullif(o.a->3, 'null'), \
     (o.a->>4)::uuid, o.a->>5, (o.a->>6)::bigint)",
    "NULL::jsonb"
);
/// `(key, saga, reply, entry)`.
pub static REFUND: OnceFn = once_fn!(
    "payment.lock_sagas",
    "payment.refund_once(o.a->>0, (o.a->>1)::uuid, o.a->2, (o.a->>3)::uuid)",
    "NULL::jsonb"
);
/// `(key, saga, reply, refusal, order, customer, items, amount)`.
pub static CREATE_ORDER: OnceFn = once_fn!(
    "orders.lock_sagas",
    "orders.create_once(o.a->>0, (o.a->>1)::uuid, o.a->2, nullif(o.a->3, 'null'), \
     (o.a->>4)::uuid, o.a->>5, o.a->6, (o.a->>7)::bigint)",
    "NULL::jsonb"
);
/// `(key, saga, reply, tombstone)`.
pub static CANCEL_ORDER: OnceFn = once_fn!(
    "orders.lock_sagas",
    "orders.cancel_once(o.a->>0, (o.a->>1)::uuid, o.a->2, (o.a->>3)::uuid)",
    "NULL::jsonb"
);
/// `(key, saga, reply, refusal, confirmation, order, customer, attempts)`.
pub static CONFIRM: OnceFn = once_fn!(
    "notification.lock_sagas",
    "notification.confirm_once(o.a->>0, (o.a->>1)::uuid, o.a->2, nullif(o.a->3, 'null'), \
     (o.a->>4)::uuid, (o.a->>5)::uuid, o.a->>6, (o.a->>7)::integer)",
    "NULL::jsonb"
);

/// What a `*_once` call returns.
#[derive(Debug, sqlx::FromRow)]
pub struct Called {
    /// The reply stored for the action.
    pub reply: Json<Reply>,
    /// Whether it was stored by an earlier delivery.
    pub replayed: bool,
    /// Each line's decision (reservations only; none when replayed).
    pub lines: Option<Json<Vec<LineDecision>>>,
}

#[derive(sqlx::FromRow)]
struct Numbered {
    n: i64,
    #[sqlx(flatten)]
    called: Called,
}

type Call = (&'static OnceFn, Value);
type Answer = Result<Called, sqlx::Error>;

/// A worker's database: its pool, and the queue its actions' statements share.
#[derive(Debug, Clone)]
pub struct Db {
    pool: PgPool,
    calls: GroupCommit<Call, Answer>,
}

impl Db {
    /// Starts the queue's task (inside the Tokio runtime).
    pub fn new(pool: PgPool) -> Self {
        let for_calls = pool.clone();
        Db {
            calls: GroupCommit::start(MAX_BATCH, move |batch| run(for_calls.clone(), batch)),
            pool,
        }
    }

    /// The pool, for statements that are not actions.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Calls `function` with `args` (a JSON array, in the function's argument order).
    pub async fn call(&self, function: &'static OnceFn, args: Value) -> Answer {
        self.calls
            .submit((function, args))
            .await
            // Only while the runtime shuts down: the pool is closing too.
            .unwrap_or_else(|_| Err(sqlx::Error::PoolClosed))
    }
}

/// One statement per function in the batch, the actions of each in the order they came.
async fn run(pool: PgPool, batch: Vec<Call>) -> Vec<Answer> {
    let mut by_function: BTreeMap<&'static OnceFn, Vec<(usize, Value)>> = BTreeMap::new();
    for (i, (function, args)) in batch.into_iter().enumerate() {
        by_function.entry(function).or_default().push((i, args));
    }
    let total = by_function.values().map(Vec::len).sum();
    let mut answers: Vec<Option<Answer>> = (0..total).map(|_| None).collect();
    for (function, calls) in by_function {
        let (positions, args): (Vec<usize>, Vec<Value>) = calls.into_iter().unzip();
        for (i, answer) in positions
            .into_iter()
            .zip(each_or_alone(&pool, function, args).await)
        {
            answers[i] = Some(answer);
        }
    }
    answers
        .into_iter()
        .map(|a| a.unwrap_or(Err(sqlx::Error::RowNotFound)))
        .collect()
}

async fn each_or_alone(pool: &PgPool, function: &'static OnceFn, args: Vec<Value>) -> Vec<Answer> {
    if args.len() > 1 {
        match called(pool, function, &args).await {
            Ok(rows) => return rows,
            Err(err) => {
                tracing::warn!(actions = args.len(), error = %err, "{FELL_BACK}");
            }
        }
    }
    let mut answers = Vec::with_capacity(args.len());
    for one in args {
        let mut rows = match called(pool, function, std::slice::from_ref(&one)).await {
            Ok(rows) => rows,
            Err(err) => vec![Err(err)],
        };
        answers.push(rows.pop().unwrap_or(Err(sqlx::Error::RowNotFound)));
    }
    answers
}

/// One answer per call, in order; a call the statement returned no row for is `RowNotFound`
/// (every function returns exactly one row per call).
async fn called(
    pool: &PgPool,
    function: &OnceFn,
    args: &[Value],
) -> Result<Vec<Answer>, sqlx::Error> {
    let sql = if args.len() > 1 {
        function.batch
    } else {
        function.alone
    };
    let rows: Vec<Numbered> = sqlx::query_as(sql)
        .bind(Value::Array(args.to_vec()))
        .fetch_all(pool)
        .await?;
    let mut answers: Vec<Option<Called>> = (0..args.len()).map(|_| None).collect();
    for row in rows {
        if let Some(slot) = usize::try_from(row.n - 1)
            .ok()
            .and_then(|i| answers.get_mut(i))
        {
            *slot = Some(row.called);
        }
    }
    Ok(answers
        .into_iter()
        .map(|a| a.ok_or(sqlx::Error::RowNotFound))
        .collect())
}
