-- A saga refused at its first step had nothing to undo: it ends 'failed', not 'compensated'.
ALTER TABLE saga.sagas DROP CONSTRAINT sagas_status_check;
ALTER TABLE saga.sagas ADD CONSTRAINT sagas_status_check
    CHECK (status IN ('running', 'compensating', 'completed', 'compensated', 'failed', 'stuck'));

-- A completed saga may still await its fire-and-forget step (the confirmation), whose
-- deadline re-sends it within its bound; so the deadline scan reads every saga with a
-- deadline, whatever its status. Every other ended saga has none.
DROP INDEX saga.sagas_due;
CREATE INDEX sagas_due ON saga.sagas (deadline_at) WHERE deadline_at IS NOT NULL;
