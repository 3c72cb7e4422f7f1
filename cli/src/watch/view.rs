//! Draws the watcher's [`Model`] on a terminal frame. Everything it shows is computed by the
//! model; this file only lays it out.

use super::model::{Model, OUTCOMES};
use checkout_shared::SagaStatus;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table};
use std::time::{Duration, Instant};

/// Stuck sagas listed on screen at most (the title counts them all).
const STUCK_SHOWN: usize = 5;

fn millis(d: Option<Duration>) -> String {
    d.map_or("-".to_owned(), |d| {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    })
}

fn colour(state: SagaStatus) -> Style {
    let colour = match state {
        SagaStatus::Running => Color::Cyan,
        SagaStatus::Compensating => Color::Yellow,
        SagaStatus::Completed => Color::Green,
        SagaStatus::Compensated => Color::Magenta,
        SagaStatus::Failed => Color::LightRed,
        SagaStatus::Stuck => Color::Red,
        SagaStatus::Rejected => Color::LightYellow,
    };
    Style::default().fg(colour)
}

/// Draws the whole screen: a header, the outcome table, and the recent sagas.
pub fn draw(frame: &mut Frame, model: &Model, now: Instant, source: &str) {
    let stuck = model.stuck();
    // The stuck list takes as many lines as it has sagas, up to a few; its title counts all.
    let stuck_lines = stuck.len().min(STUCK_SHOWN) as u16;
    let [header, outcomes, stuck_area, recent] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Length(OUTCOMES.len() as u16 + 3),
        Constraint::Length(if stuck.is_empty() { 0 } else { stuck_lines + 2 }),
        Constraint::Min(3),
    ])
    .areas(frame.area());

    let title = Line::from(format!(
        "checkout watch · {source} · in flight {} · last minute p50 {} p99 {} · q quits",
        model.in_flight(),
        millis(model.percentile(0.50)),
        millis(model.percentile(0.99)),
    ))
    .style(Style::default().add_modifier(Modifier::BOLD));
    let oldest = match model.oldest_running(now) {
        Some(o) => format!(
            "oldest running {} for {:.1} s at {} · stuck {}",
            o.saga_id,
            o.running_for.as_secs_f64(),
            if o.step.is_empty() { "?" } else { &o.step },
            stuck.len()
        ),
        None => format!("nothing running · stuck {}", stuck.len()),
    };
    let header_lines = vec![title, Line::from(oldest)];
    frame.render_widget(Paragraph::new(header_lines), header);

    if !stuck.is_empty() {
        let rows = stuck.iter().take(STUCK_SHOWN).map(|s| {
            Row::new(vec![
                Cell::from(s.saga_id.to_string()),
                Cell::from(format!(
                    "{:.0} s",
                    now.saturating_duration_since(s.since).as_secs_f64()
                )),
                Cell::from(s.reason.clone()),
            ])
        });
        let widths = [
            Constraint::Length(36),
            Constraint::Length(8),
            Constraint::Fill(1),
        ];
        let title = format!(" stuck sagas: {} (checkout retry <id>) ", stuck.len());
        let table = Table::new(rows, widths)
            .style(colour(SagaStatus::Stuck))
            .block(Block::bordered().title(title));
        frame.render_widget(table, stuck_area);
    }

    let rows = OUTCOMES.iter().map(|outcome| {
        Row::new(vec![
            Cell::from(*outcome),
            Cell::from(model.count_of(outcome).to_string()),
            Cell::from(format!("{:.2}/s", model.rate_of(outcome, now))),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(14),
            Constraint::Length(10),
            Constraint::Length(12),
        ],
    )
    .header(
        Row::new(["outcome", "count", "rate (1 min)"])
            .style(Style::default().add_modifier(Modifier::BOLD)),
    )
    .block(Block::bordered().title(" outcomes since start "));
    frame.render_widget(table, outcomes);

    let rows = model.recent().map(|line| {
        Row::new(vec![
            Cell::from(line.saga_id.to_string()),
            Cell::from(line.state.as_str()).style(colour(line.state)),
            Cell::from(line.step.clone()),
            Cell::from(millis(line.took)),
            Cell::from(line.detail.clone()),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(36),
            Constraint::Length(12),
            Constraint::Length(24),
            Constraint::Length(10),
            Constraint::Fill(1),
        ],
    )
    .header(
        Row::new(["saga", "state", "step", "took", "detail"])
            .style(Style::default().add_modifier(Modifier::BOLD)),
    )
    .block(Block::bordered().title(" recent sagas (latest change first) "));
    frame.render_widget(table, recent);
}
