//! `checkout nats-trace-bridge`: nats-server's message-trace events turned into spans of
//! service `nats-server`, so the time a message spent in the broker shows in its trace.
//!
//! ```text
//!  checkout.trace.nats (core NATS, one JSON event per traced message)
//!    ──▶ checkout_shared::broker_trace::hop_span ──▶ span `nats-server <subject>` (OTLP)
//! ```
//!
//! An event that is not a usable trace is counted and logged with its reason, never fatal.

use crate::common::{NatsArgs, SERVICE_FILTER, TelemetryArgs};
use checkout_shared::broker_trace::{self, TRACE_SUBJECT};
use checkout_shared::shutdown;
use clap::Args;
use futures::StreamExt as _;
use std::process::ExitCode;

/// Options of the bridge.
#[derive(Debug, Args)]
pub struct BridgeArgs {
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    telemetry: TelemetryArgs,
}

/// Runs the bridge until SIGTERM or Ctrl-C; reports how many events became spans.
pub async fn run(args: BridgeArgs) -> anyhow::Result<ExitCode> {
    let telemetry = args.telemetry.init("nats-server", SERVICE_FILTER)?;
    let stop = shutdown::on_signals();
    let nats =
        checkout_shared::connect::connect(&args.nats.nats_url, "nats-trace-bridge", true).await?;
    let mut events = nats.subscribe(TRACE_SUBJECT).await?;
    tracing::info!(
        subject = TRACE_SUBJECT,
        "turning nats-server trace events into spans"
    );
    let (mut spans, mut refused) = (0u64, 0u64);
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => break,
            event = events.next() => event,
        };
        let Some(event) = event else { break };
        match broker_trace::hop_span(&event.payload) {
            Ok(hop) => {
                broker_trace::emit(hop);
                spans += 1;
            }
            Err(why) => {
                refused += 1;
                tracing::warn!(reason = %why, "trace event not turned into a span");
            }
        }
    }
    tracing::info!(spans, refused, "nats-trace-bridge stopping");
    let _ = events.unsubscribe().await;
    let _ = nats.drain().await;
    telemetry.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
