-- The retention pruner's scan (orchestrator/src/retention.rs): ended sagas with no deadline,
-- oldest end first. Partial, so the index holds only sagas the pruner may ever delete and
-- costs nothing to sagas in flight; a completed saga awaiting its confirmation still has a
-- deadline and enters it only once that is settled.
CREATE INDEX sagas_prunable ON saga.sagas (finished_at)
    WHERE deadline_at IS NULL AND finished_at IS NOT NULL;
