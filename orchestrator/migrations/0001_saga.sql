-- One row per saga: its machine state (as JSON, read back by the executor), the columns the
-- orchestrator queries by, and the ids and start times of the spans it will emit when they
-- end, so that a saga's spans stay whole across an orchestrator restart.
CREATE TABLE saga.sagas (
    saga_id          uuid PRIMARY KEY,
    status           text NOT NULL
                     CHECK (status IN ('running', 'compensating', 'completed', 'compensated', 'stuck')),
    state            jsonb NOT NULL,
    version          bigint NOT NULL,
    trace_id         text NOT NULL,
    parent_span_id   text,
    saga_span_id     text NOT NULL,
    sampled          boolean NOT NULL,
    step_span_id     text NOT NULL,
    step_started_at  timestamptz NOT NULL,
    failed_span_id   text,
    -- Spans finished by the last transition and not yet confirmed exported; re-emitted by
    -- recovery after a crash.
    pending_spans    jsonb,
    deadline_at      timestamptz,
    started_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    finished_at      timestamptz,
    stuck_reason     text
);

CREATE INDEX sagas_due ON saga.sagas (deadline_at) WHERE status IN ('running', 'compensating');
CREATE INDEX sagas_pending_spans ON saga.sagas (saga_id) WHERE pending_spans IS NOT NULL;
CREATE INDEX sagas_stuck ON saga.sagas (updated_at) WHERE status = 'stuck';

-- The append-only history of every saga.
CREATE TABLE saga.saga_log (
    id       bigserial PRIMARY KEY,
    saga_id  uuid NOT NULL REFERENCES saga.sagas (saga_id),
    step     text,
    event    text NOT NULL CHECK (event IN ('started', 'succeeded', 'failed', 'undo_started',
                                           'undo_finished', 'undo_failed', 'retried',
                                           'completed', 'compensated', 'stuck')),
    detail   text,
    at       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX saga_log_by_saga ON saga.saga_log (saga_id, id);
