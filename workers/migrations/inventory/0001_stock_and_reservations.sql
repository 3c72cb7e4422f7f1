-- Stock can never go negative: the CHECK is the last line of defence behind the conditional
-- UPDATE that reserves.
CREATE TABLE inventory.stock (
    sku        text PRIMARY KEY,
    available  integer NOT NULL CHECK (available >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- One row per saga. 'void' is a tombstone left by a release that arrived before (or
-- instead of) its reservation, so that a late reservation is refused rather than leaked.
CREATE TABLE inventory.reservations (
    saga_id        uuid PRIMARY KEY,
    reservation_id uuid NOT NULL,
    items          jsonb NOT NULL,
    state          text NOT NULL CHECK (state IN ('held', 'released', 'void')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    released_at    timestamptz
);

-- The reply to every action already performed, keyed by {saga_id}.{step}.{do|undo}:
-- a redelivery re-sends it instead of acting twice.
CREATE TABLE inventory.processed_messages (
    action_key   text PRIMARY KEY,
    reply        jsonb NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now()
);
