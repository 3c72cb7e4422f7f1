//! The injector: hurts the system at the moments of [`super::schedule`]: the first round, one of
//! each enabled fault paced to fit in the publishing window and finished even if it outlasts
//! it, then random picks while publishing lasts. With `database`, one worker's table is also
//! made unusable (see [`super::outage`]) from the first fault moment on, in the background,
//! while the other faults go on. A fault whose injection failed is recorded with its error
//! (it does not count as injected).

use super::faults::{Fault, FaultKind};
use super::outage::{self, OutageReport};
use super::schedule::{self, Action, is_orchestrator};
use crate::stack::PrivateStack;
use checkout_harness::TcpProxy;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What to inject, and when.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Mean time between faults (each wait is 0.5 to 1.5 times this); the first round's
    /// pace, unless the duration asks for a faster one.
    pub every: Duration,
    /// How long publishing is planned to last: the first round is due within it.
    pub duration: Duration,
    /// Seed of the choices.
    pub seed: u64,
    /// The kinds enabled.
    pub kinds: Vec<FaultKind>,
    /// How long the table outage lasts (with `database`).
    pub outage: Duration,
}

/// Injects faults until publishing is over, the first round done and the table outage (if any)
/// ended; returns the stack, the faults and the outage's report.
pub async fn run(
    mut stack: PrivateStack,
    plan: Plan,
    publishing: Arc<AtomicBool>,
) -> (PrivateStack, Vec<Fault>, Option<OutageReport>) {
    let mut rng = StdRng::seed_from_u64(plan.seed ^ 0x9e37_79b9_7f4a_7c15);
    let (orchestrators, workers): (Vec<String>, Vec<String>) =
        stack.names().into_iter().partition(|n| is_orchestrator(n));
    let start = tokio::time::Instant::now();
    let first_round = schedule::first_round(
        &plan.kinds,
        &workers,
        &orchestrators,
        plan.every,
        plan.duration,
        &mut rng,
    );
    let target = outage::TARGETS[rng.random_range(0..outage::TARGETS.len())];
    let mut outage_task = None;
    let mut faults = Vec::new();
    while schedule::goes_on(
        publishing.load(Ordering::SeqCst),
        faults.len(),
        first_round.len(),
    ) {
        let action = match first_round.get(faults.len()) {
            Some((moment, action)) => {
                tokio::time::sleep_until(start + *moment).await;
                action.clone()
            }
            None => {
                tokio::time::sleep(plan.every.mul_f64(rng.random_range(0.5..1.5))).await;
                if !publishing.load(Ordering::SeqCst) {
                    break;
                }
                schedule::pick(&mut rng, &plan.kinds, &workers, &orchestrators)
            }
        };
        if outage_task.is_none() && plan.kinds.contains(&FaultKind::Database) {
            let url = stack.db_url.clone();
            // Renamed for the last quarter: actions fail too, undos had sagas to undo.
            let (length, renamed) = (plan.outage, plan.outage / 4);
            outage_task = Some(tokio::spawn(async move {
                outage::run(&url, target, length, renamed).await
            }));
        }
        let down = Duration::from_millis(rng.random_range(300..1_500));
        let at = Instant::now();
        let (description, error) = match inject(&mut stack, &action, down, &mut rng).await {
            Ok(description) => (description, None),
            Err(err) => {
                tracing::error!(?action, error = %err, "fault injection failed");
                (format!("{action:?} (failed: {err})"), Some(err.to_string()))
            }
        };
        faults.push(Fault {
            kind: action.kind(),
            action: description,
            at,
            down: at.elapsed(),
            error,
        });
    }
    let outage = match outage_task {
        Some(task) => Some(task.await.unwrap_or_else(|err| OutageReport {
            error: Some(format!("the outage task failed: {err}")),
            ..OutageReport::default()
        })),
        None => None,
    };
    if let Some(report) = &outage {
        faults.push(Fault {
            kind: FaultKind::Database,
            action: format!("{} unusable", report.table),
            // Progress is expected back from the restoration on.
            at: Instant::now(),
            down: Duration::from_secs_f64(report.seconds),
            error: (!report.restored).then(|| {
                report
                    .error
                    .clone()
                    .unwrap_or_else(|| "not restored".into())
            }),
        });
    }
    (stack, faults, outage)
}

/// Does one action (waiting out its `down` time); returns what was done, for the log.
async fn inject(
    stack: &mut PrivateStack,
    action: &Action,
    down: Duration,
    rng: &mut StdRng,
) -> anyhow::Result<String> {
    match action {
        Action::KillBroker => {
            let (node, led) = broker_victim(stack, rng).await?;
            let name = stack.nats.node_name(node);
            stack.nats.kill(node);
            tokio::time::sleep(down).await;
            stack.nats.restart(node).await?;
            Ok(format!("kill {name}{led}"))
        }
        Action::CutOffNode => {
            let node = rng.random_range(0..stack.nats.len());
            let name = stack.nats.node_name(node);
            let cluster = stack
                .nats
                .cluster()
                .ok_or_else(|| anyhow::anyhow!("the broker is a single server: no routes"))?;
            let routes = cluster.cut_off(node, down)?;
            tokio::time::sleep(down).await;
            Ok(format!("cut off {name} ({routes} routes)"))
        }
        Action::KillPostgres => {
            let cluster = stack
                .postgres()
                .ok_or_else(|| anyhow::anyhow!("the stack has no private cluster"))?;
            cluster.kill();
            tokio::time::sleep(down).await;
            cluster.restart().await?;
            Ok("kill postgres".into())
        }
        Action::Kill(victim) => {
            let service = stack
                .service(victim)
                .ok_or_else(|| anyhow::anyhow!("no service {victim}"))?;
            service.kill();
            tokio::time::sleep(down).await;
            service.restart()?;
            Ok(format!("kill {victim}"))
        }
        Action::Cut => {
            let (names, proxies) = proxies(stack, rng)?;
            for proxy in &proxies {
                proxy.cut();
                proxy.refuse_for(down);
            }
            tokio::time::sleep(down).await;
            Ok(format!("cut {names}"))
        }
        Action::Latency => {
            let (names, proxies) = proxies(stack, rng)?;
            let latency = Duration::from_millis(rng.random_range(20..200));
            let period = Duration::from_millis(rng.random_range(1_000..4_000));
            for proxy in &proxies {
                proxy.add_latency(latency, period);
            }
            tokio::time::sleep(period).await;
            Ok(format!("latency {names} {} ms", latency.as_millis()))
        }
    }
}

/// The node a broker kill hits: the single server; on a cluster, the node leading the most
/// streams and consumers when the cluster can tell (the costliest death: every election at
/// once), else one at random. With the node, what it led, for the log.
async fn broker_victim(
    stack: &mut PrivateStack,
    rng: &mut StdRng,
) -> anyhow::Result<(usize, String)> {
    let Some(cluster) = stack.nats.cluster() else {
        return Ok((0, String::new()));
    };
    let random = rng.random_range(0..cluster.len());
    match cluster.leaders().await {
        Ok(leaders) => {
            let total: usize = leaders.values().sum();
            let busiest = leaders
                .iter()
                .max_by_key(|(_, n)| **n)
                .and_then(|(name, n)| Some((cluster.index_of(name)?, *n)));
            Ok(match busiest {
                Some((node, n)) => (node, format!(" (leading {n} of {total})")),
                None => (random, " (no leader known)".into()),
            })
        }
        Err(err) => Ok((random, format!(" (leaders unknown: {err})"))),
    }
}

/// The proxies a network fault hits: the broker's, the database's or both (seeded).
fn proxies<'a>(
    stack: &'a PrivateStack,
    rng: &mut StdRng,
) -> anyhow::Result<(&'static str, Vec<&'a TcpProxy>)> {
    let Some(db) = &stack.db_proxy else {
        anyhow::bail!("the stack has no proxies");
    };
    let nats = stack.nats_proxies.iter();
    Ok(match rng.random_range(0..3) {
        0 => ("nats", nats.collect()),
        1 => ("db", vec![db]),
        _ => ("nats+db", nats.chain([db]).collect()),
    })
}
