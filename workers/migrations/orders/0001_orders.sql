-- One order per saga. 'void' is a tombstone left by a cancel that arrived before its create.
CREATE TABLE orders.orders (
    saga_id      uuid PRIMARY KEY,
    order_id     uuid NOT NULL,
    customer_id  text NOT NULL,
    items        jsonb NOT NULL,
    amount_cents bigint NOT NULL,
    status       text NOT NULL CHECK (status IN ('created', 'cancelled', 'void')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    cancelled_at timestamptz
);

CREATE TABLE orders.processed_messages (
    action_key   text PRIMARY KEY,
    reply        jsonb NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now()
);
