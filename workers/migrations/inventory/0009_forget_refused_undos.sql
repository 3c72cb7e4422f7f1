-- An undo has no refusal. Earlier versions could store a failure to act (the database down
-- for longer than the delivery budget) as an undo's reply, and every later copy of that undo
-- replayed it: the saga stayed stuck with the effect in place. Forgetting those rows lets the
-- orchestrator's retries perform the undo.
DELETE FROM inventory.processed_messages
WHERE action_key LIKE '%.undo' AND reply->>'outcome' = 'step_failed';
