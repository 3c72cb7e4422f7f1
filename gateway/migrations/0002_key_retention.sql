-- The retention pruner's scan (gateway/src/idempotency.rs): keys oldest first. A btree rather
-- than BRIN: pruned pages are reused by new keys, and a BRIN range's bounds never narrow
-- again, so before long every range would match the scan.
CREATE INDEX idempotency_keys_created_at ON gateway.idempotency_keys (created_at);
