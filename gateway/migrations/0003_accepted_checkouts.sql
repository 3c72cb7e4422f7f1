-- One row per checkout a gateway accepted (answered 202), written before the answer: until the
-- orchestrator's first lifecycle event, this row is what makes GET /checkouts/{id} answer
-- `accepted` (200) rather than 404, from every gateway. Pruned after the same retention as the
-- idempotency keys (a day by default, as long as the lifecycle stream keeps a saga's events).
CREATE TABLE gateway.accepted_checkouts (
    saga_id     uuid PRIMARY KEY,
    trace_id    text NOT NULL,
    accepted_at timestamptz NOT NULL DEFAULT now()
);
-- The pruner's scan, oldest first (a btree, as for the keys).
CREATE INDEX accepted_checkouts_accepted_at ON gateway.accepted_checkouts (accepted_at);
