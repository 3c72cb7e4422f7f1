-- One confirmation per order: the saga id is the key, so a command delivered again, or sent
-- afresh under a new message id, never sends a second one.
CREATE TABLE notification.confirmations (
    saga_id         uuid PRIMARY KEY,
    confirmation_id uuid NOT NULL,
    order_id        uuid,
    customer_id     text NOT NULL,
    attempts        integer NOT NULL,
    sent_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE notification.processed_messages (
    action_key   text PRIMARY KEY,
    reply        jsonb NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now()
);
