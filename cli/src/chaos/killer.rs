//! The killer: SIGKILLs a process at moments chosen from the seed, pauses, restarts it. The
//! first round takes one of each kind (every worker kind, the orchestrator, the broker) in a
//! seeded order, so every kind is killed at least once; later rounds pick at random.

use crate::stack::PrivateStack;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The victim name of the broker.
pub const BROKER: &str = "nats";
/// At most this many kills, whatever the duration.
const MAX_KILLS: usize = 1_000;

/// When to kill.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// Mean time between kills (each wait is 0.5 to 1.5 times this).
    pub every: Duration,
    /// Seed of the choices.
    pub seed: u64,
}

/// One kill.
#[derive(Debug, Clone)]
pub struct Kill {
    /// The process (`inventory-2`, `orchestrator`, `nats`).
    pub victim: String,
    /// When it was killed.
    pub at: Instant,
    /// How long it stayed down.
    pub down: Duration,
}

impl Kill {
    /// The kind of process: `inventory`, `payment`, `order`, `orchestrator` or `nats`.
    pub fn kind(&self) -> &str {
        self.victim.split('-').next().unwrap_or(&self.victim)
    }
}

/// Kills and restarts processes until publishing is over; returns the stack and the kills.
pub async fn run(
    mut stack: PrivateStack,
    schedule: Schedule,
    publishing: Arc<AtomicBool>,
) -> (PrivateStack, Vec<Kill>) {
    let mut rng = StdRng::seed_from_u64(schedule.seed ^ 0x9e37_79b9_7f4a_7c15);
    let names = stack.names();
    let mut first_round: Vec<String> = checkout_shared::steps::worker_kinds()
        .chain(["orchestrator"])
        .filter_map(|kind| {
            let of_kind: Vec<_> = names.iter().filter(|n| n.starts_with(kind)).collect();
            of_kind
                .get(rng.random_range(0..of_kind.len().max(1)))
                .map(|n| (*n).clone())
        })
        .chain([BROKER.to_owned()])
        .collect();
    first_round.shuffle(&mut rng);
    let mut victims: Vec<String> = names.clone();
    victims.push(BROKER.to_owned());
    let mut kills = Vec::new();
    while publishing.load(Ordering::SeqCst) && kills.len() < MAX_KILLS {
        let wait = schedule.every.mul_f64(rng.random_range(0.5..1.5));
        tokio::time::sleep(wait).await;
        if !publishing.load(Ordering::SeqCst) {
            break;
        }
        let victim = if kills.len() < first_round.len() {
            first_round[kills.len()].clone()
        } else {
            victims[rng.random_range(0..victims.len())].clone()
        };
        let down = Duration::from_millis(rng.random_range(300..1_500));
        let at = Instant::now();
        if let Err(err) = kill_and_restart(&mut stack, &victim, down).await {
            tracing::error!(%victim, error = %err, "restart failed");
        }
        kills.push(Kill { victim, at, down });
    }
    (stack, kills)
}

async fn kill_and_restart(
    stack: &mut PrivateStack,
    victim: &str,
    down: Duration,
) -> anyhow::Result<()> {
    if victim == BROKER {
        stack.nats.kill();
        tokio::time::sleep(down).await;
        return stack.nats.restart_async().await;
    }
    let Some(service) = stack.service(victim) else {
        return Ok(());
    };
    service.kill();
    tokio::time::sleep(down).await;
    let service = stack
        .service(victim)
        .ok_or_else(|| anyhow::anyhow!("{victim} vanished"))?;
    service.restart()
}
