-- An undo is retried until it succeeds: a stuck saga is only flagged, it keeps its deadline
-- and stays in the deadline scan. Sagas left stuck by earlier versions (which gave up on
-- their undo) resume their retries at once.
DROP INDEX saga.sagas_due;
CREATE INDEX sagas_due ON saga.sagas (deadline_at)
    WHERE status IN ('running', 'compensating', 'stuck');
UPDATE saga.sagas SET deadline_at = now(), finished_at = NULL WHERE status = 'stuck';
