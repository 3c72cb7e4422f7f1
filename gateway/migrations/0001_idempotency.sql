-- One row per Idempotency-Key: the hash of the body it was first used with, and the saga it
-- started. Shared by every gateway and kept across restarts; the saga id is also derived
-- from the key (UUIDv5), so two gateways racing on one key start the same saga either way.
CREATE TABLE gateway.idempotency_keys (
    key         text PRIMARY KEY,
    body_sha256 bytea NOT NULL,
    saga_id     uuid NOT NULL,
    trace_id    text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
