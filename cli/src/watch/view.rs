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
    let [header, outcomes, recent] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Length(OUTCOMES.len() as u16 + 3),
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
    frame.render_widget(Paragraph::new(title), header);

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
