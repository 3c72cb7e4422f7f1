-- The retention pruner's scan (workers/src/retention.rs): processed-message records oldest
-- first. A btree rather than BRIN: pruned pages are reused by new records, and a BRIN
-- range's bounds never narrow again, so before long every range would match the scan. The
-- column only grows, so inserts land on the index's rightmost page.
CREATE INDEX processed_messages_processed_at ON notification.processed_messages (processed_at);
