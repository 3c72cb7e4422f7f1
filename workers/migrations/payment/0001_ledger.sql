-- At most one charge and one refund per saga, by construction. A refund of 0 cents with no
-- charge is a tombstone: the saga was compensated before its charge arrived, and a late
-- charge is refused.
CREATE TABLE payment.ledger (
    saga_id      uuid NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('charge', 'refund')),
    entry_id     uuid NOT NULL,
    customer_id  text NOT NULL,
    amount_cents bigint NOT NULL CHECK (amount_cents >= 0),
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (saga_id, kind)
);

CREATE TABLE payment.processed_messages (
    action_key   text PRIMARY KEY,
    reply        jsonb NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now()
);
