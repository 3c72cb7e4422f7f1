//! What leaves the executor: the command a saga's state implies, and lifecycle events for
//! watchers.

use super::{ExecError, Executor};
use crate::ports::{SagaStore, Transport};
use crate::saga;
use crate::store::SagaRow;
use bytes::Bytes;
use checkout_shared::envelope::Envelope;
use checkout_shared::messages::{CommandMessage, LifecycleEvent, LifecycleKind, StepRef};
use checkout_shared::messaging::Outgoing;
use checkout_shared::{Phase, StepOutcome, subjects};
use opentelemetry::KeyValue;
use uuid::Uuid;

impl<S: SagaStore, T: Transport> Executor<S, T> {
    /// Sends the command the stored state implies, under the current step's span.
    pub async fn send_current(&self, row: &SagaRow) -> Result<(), ExecError> {
        let state = &row.state;
        let step = state.step();
        let Some(command) = saga::command(step, state.phase, &state.data) else {
            // The machine never undoes a step without an undo; a state that asks for it is a
            // bug, reported rather than sent as a command no worker knows.
            tracing::error!(saga_id = %row.saga_id, %step, "no undo to send");
            return Ok(());
        };
        let envelope = Envelope::command(row.saga_id, step, state.phase);
        let msg_id = state.msg_id(row.saga_id);
        let mut headers = async_nats::HeaderMap::new();
        envelope.write(&mut headers, &msg_id);
        let body = CommandMessage {
            saga_id: row.saga_id,
            command,
        };
        let payload = serde_json::to_vec(&body)
            .map(Bytes::from)
            .map_err(|source| ExecError::Serialize {
                what: "a command",
                source,
            })?;
        let subject = subjects::command(step, state.phase);
        let parent = row.trace.context_of(row.step_span_id);
        let extra = saga_attributes(row.saga_id, step, state.phase);
        let outgoing = Outgoing {
            subject,
            msg_id,
            headers,
            payload,
        };
        self.transport
            .send_command(&parent, outgoing, extra)
            .await?;
        Ok(())
    }

    /// Tells watchers what happened and where the saga (as `row` has it afterwards) stands.
    pub(super) async fn lifecycle(
        &self,
        row: &SagaRow,
        kind: LifecycleKind,
        ended: Option<(StepRef, StepOutcome)>,
        detail: String,
    ) {
        let event = LifecycleEvent {
            saga_id: row.saga_id,
            kind,
            status: Some(row.state.status),
            step: ended.map(|(s, _)| s.step),
            phase: ended.map(|(s, _)| s.phase),
            outcome: ended.map(|(_, outcome)| outcome),
            next: row.state.waiting_for(),
            failure_code: row.state.failure_code,
            rejection: None,
            field: None,
            detail,
            trace_id: row.trace.trace_id.to_string(),
        };
        match serde_json::to_vec(&event) {
            Ok(payload) => {
                let subject = subjects::lifecycle(row.saga_id, kind.as_str());
                self.transport
                    .lifecycle(subject, Bytes::from(payload))
                    .await;
            }
            // Watchers are best-effort (the saga row is the truth), but a bug is not hidden.
            Err(err) => tracing::error!(error = %err, "lifecycle event not serialisable"),
        }
    }
}

fn saga_attributes(saga_id: Uuid, step: checkout_shared::Step, phase: Phase) -> Vec<KeyValue> {
    vec![
        KeyValue::new("saga.id", saga_id.to_string()),
        KeyValue::new("saga.step", step.as_str()),
        KeyValue::new("saga.phase", phase.as_str()),
    ]
}
