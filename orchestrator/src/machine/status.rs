//! Where a saga stands, as stored in its row.

use serde::{Deserialize, Serialize};

/// Where a saga stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Doing steps.
    Running,
    /// Undoing steps after a failure.
    Compensating,
    /// Every step done.
    Completed,
    /// Every step that may have happened undone.
    Compensated,
    /// The first step refused: nothing happened, so there was nothing to undo.
    Failed,
    /// Compensating, but an undo has had no success for longer than the policy's
    /// `stuck_after`: flagged for an operator while its retries go on.
    Stuck,
}

impl Status {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Compensating => "compensating",
            Status::Completed => "completed",
            Status::Compensated => "compensated",
            Status::Failed => "failed",
            Status::Stuck => "stuck",
        }
    }

    /// Whether the saga is waiting for a reply (and so has a deadline).
    pub fn is_active(self) -> bool {
        matches!(self, Status::Running | Status::Compensating | Status::Stuck)
    }
}
