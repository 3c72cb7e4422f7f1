//! `checkout watch`: lifecycle events (`checkout.saga.<id>.*`), rejections and dead letters,
//! live. On a terminal, a full-screen view of the [`model::Model`]; otherwise (a pipe, a file,
//! a test) one plain line per event, as scripts expect. `watch <id>` follows one saga in plain
//! lines: its events so far (from the lifecycle stream), then live, and exits when it ends.
//!
//! ```text
//!  NATS subscriptions ──▶ bounded channel ──▶ UI thread: Model::apply ─▶ view::draw (4 Hz)
//!                                                   ▲ crossterm keys: q, Esc, Ctrl-C
//! ```

pub mod model;
mod view;

use crate::client::describe;
use crate::common::NatsArgs;
use anyhow::Context as _;
use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use checkout_shared::envelope;
use checkout_shared::messages::LifecycleEvent;
use checkout_shared::streams::LIFECYCLE_STREAM;
use checkout_shared::subjects;
use clap::Args;
use futures::StreamExt;
use model::{Model, WatchEvent};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyModifiers};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use uuid::Uuid;

/// How often the screen is redrawn (and keys are polled).
const FRAME: Duration = Duration::from_millis(250);

/// Options of `checkout watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// Only this saga: what it went through so far, then live until it ends (plain lines).
    saga_id: Option<Uuid>,
    /// Stop after this many seconds (default: until q or Ctrl-C).
    #[arg(long)]
    timeout_secs: Option<u64>,
    /// Print raw JSON events (never full-screen).
    #[arg(long)]
    json: bool,
    /// Plain lines even on a terminal.
    #[arg(long)]
    plain: bool,
}

/// Messages from any of the subscriptions, in arrival order.
type Feed = futures::stream::BoxStream<'static, async_nats::Message>;

/// `checkout watch`.
pub async fn watch(args: WatchArgs) -> anyhow::Result<ExitCode> {
    let nats =
        checkout_shared::connect::connect(&args.nats.nats_url, "checkout-watch", false).await?;
    let limit = Duration::from_secs(args.timeout_secs.unwrap_or(u64::MAX / 4));
    if let Some(saga_id) = args.saga_id {
        let feed = one_saga(&nats, saga_id).await?;
        eprintln!("watching {saga_id} until it ends (Ctrl-C to stop)");
        return Ok(plain_loop(feed, limit, args.json, true).await);
    }
    let lifecycle = nats.subscribe(format!("{}.>", subjects::LIFECYCLE)).await?;
    let rejected = nats.subscribe(subjects::REJECTED).await?;
    let dead = nats
        .subscribe(format!("{}.>", subjects::DEAD_LETTER))
        .await?;
    nats.flush().await?;
    let all: Feed = futures::stream::select_all([lifecycle, rejected, dead]).boxed();
    let full_screen = !args.json && !args.plain && std::io::stdout().is_terminal();
    if !full_screen {
        eprintln!("watching (Ctrl-C to stop)");
        return Ok(plain_loop(all, limit, args.json, false).await);
    }
    // Bounded: if the screen falls behind, NATS's own slow-consumer limit drops events
    // rather than this process growing without end.
    let (tx, rx) = mpsc::channel(4_096);
    let feed = tokio::spawn(async move {
        let mut all = all;
        while let Some(message) = all.next().await {
            if tx.send(to_event(&message)).await.is_err() {
                break;
            }
        }
    });
    // Shown on screen: without a password the URL may carry.
    let source = checkout_shared::connect::redacted(&args.nats.nats_url);
    let result = tokio::task::spawn_blocking(move || full_screen_loop(rx, limit, &source)).await;
    feed.abort();
    result??;
    Ok(ExitCode::SUCCESS)
}

/// One saga's lifecycle events from the start of its stream (what it went through so far,
/// then each new one, from one ordered consumer: nothing falls between history and live), and
/// the dead letters that name it.
async fn one_saga(nats: &async_nats::Client, saga_id: Uuid) -> anyhow::Result<Feed> {
    let js = checkout_shared::connect::jetstream(nats.clone());
    let history = js
        .get_stream_no_info(LIFECYCLE_STREAM)
        .await?
        .create_consumer(OrderedConfig {
            filter_subject: subjects::lifecycle_of(saga_id),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .with_context(|| format!("reading stream {LIFECYCLE_STREAM}"))?
        .messages()
        .await?
        .filter_map(|message| async move { message.ok().map(async_nats::Message::from) });
    let id = saga_id.to_string();
    let dead = nats
        .subscribe(format!("{}.>", subjects::DEAD_LETTER))
        .await?
        .filter(move |message| {
            let about = message
                .headers
                .as_ref()
                .and_then(|h| h.get(envelope::SAGA_ID));
            futures::future::ready(about.is_some_and(|v| v.as_str() == id))
        });
    nats.flush().await?;
    Ok(futures::stream::select(history, dead).boxed())
}

/// Prints each message as a line (or its JSON) until the feed ends, `limit` passes or Ctrl-C;
/// with `until_end`, also once a lifecycle event says the saga has ended.
async fn plain_loop(mut feed: Feed, limit: Duration, json: bool, until_end: bool) -> ExitCode {
    let stop = tokio::time::sleep(limit);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::signal::ctrl_c() => break,
            message = feed.next() => {
                let Some(message) = message else { break };
                if json {
                    println!("{}", String::from_utf8_lossy(&message.payload));
                } else {
                    println!("{}", plain_line(&message));
                }
                let ended = serde_json::from_slice::<LifecycleEvent>(&message.payload)
                    .is_ok_and(|event| event.kind.is_terminal());
                if until_end && ended {
                    break;
                }
            }
        }
    }
    ExitCode::SUCCESS
}

fn reason(message: &async_nats::Message) -> Option<String> {
    let headers = message.headers.as_ref()?;
    Some(headers.get(envelope::REASON)?.as_str().to_owned())
}

fn to_event(message: &async_nats::Message) -> WatchEvent {
    if let Ok(event) = serde_json::from_slice::<LifecycleEvent>(&message.payload) {
        return WatchEvent::Lifecycle(event);
    }
    let why = reason(message).unwrap_or_default();
    if message.subject.as_str() == subjects::REJECTED {
        WatchEvent::Rejected(why)
    } else {
        WatchEvent::DeadLetter(format!("{} {why}", message.subject))
    }
}

/// Today's plain output: one line per event.
fn plain_line(message: &async_nats::Message) -> String {
    match (
        serde_json::from_slice::<LifecycleEvent>(&message.payload),
        reason(message),
    ) {
        (Ok(event), _) => format!("{} {}", event.saga_id, describe(&event)),
        (Err(_), Some(reason)) => format!("{} {reason}", message.subject),
        (Err(_), None) => format!("{} (unreadable)", message.subject),
    }
}

/// Puts the terminal back however the loop ends (error included; ratatui's own panic hook
/// covers panics).
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

fn quits(event: &Event) -> bool {
    let Event::Key(key) = event else { return false };
    // Raw mode turns Ctrl-C into a key press instead of SIGINT: it has to be handled here.
    key.is_press()
        && (matches!(key.code, KeyCode::Char('q') | KeyCode::Esc)
            || (key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL)))
}

fn full_screen_loop(
    mut rx: mpsc::Receiver<WatchEvent>,
    limit: Duration,
    source: &str,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut model = Model::new(start);
    let mut terminal = ratatui::try_init()?;
    let _restore = Restore;
    while start.elapsed() < limit {
        while let Ok(event) = rx.try_recv() {
            model.apply(&event, Instant::now());
        }
        let now = Instant::now();
        model.prune(now);
        terminal.draw(|frame| view::draw(frame, &model, now, source))?;
        if event::poll(FRAME)? && quits(&event::read()?) {
            break;
        }
    }
    Ok(())
}
