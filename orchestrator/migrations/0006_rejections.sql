-- A checkout refused at the door (its cart broke a rule) never becomes a saga, but it is
-- remembered: `checkout show` prints why, and a second delivery of the same request gets the
-- same answer (the stored one, whatever the catalog says by then) instead of a saga.
-- One row per checkout id; requests too malformed to carry one only go to checkout.rejected.
CREATE TABLE saga.rejections (
    saga_id   uuid PRIMARY KEY,
    code      text NOT NULL CHECK (code IN ('too_large', 'malformed', 'invalid',
                                            'amount_mismatch', 'unknown_sku', 'price_mismatch',
                                            'currency_mismatch')),
    reason    text NOT NULL,
    field     text,
    trace_id  text NOT NULL,
    at        timestamptz NOT NULL DEFAULT now()
);

-- The retention pruner's scan, oldest first.
CREATE INDEX rejections_by_age ON saga.rejections (at);

-- `rejected` is a saga status word (what lifecycle events and the status fold say of such a
-- checkout): the constraint lists every word of the enum, as its test checks, although only
-- saga.rejections records one.
ALTER TABLE saga.sagas DROP CONSTRAINT sagas_status_check;
ALTER TABLE saga.sagas ADD CONSTRAINT sagas_status_check
    CHECK (status IN ('running', 'compensating', 'completed', 'compensated', 'failed', 'stuck',
                      'rejected'));
