-- Takes the advisory lock of every saga in a batch (each call's second argument), in the
-- order of the locks' keys, and returns the batch unchanged: the group statement reads its
-- calls from this function's result, so no call runs before every lock is held. Each
-- `*_once` function still takes its saga's lock (a no-op by then). Batches of
-- different instances, and of different services on one database (advisory locks have one
-- key space per database), thus take their saga locks in one global order and cannot
-- deadlock on them, whatever order their actions came in.
CREATE FUNCTION inventory.lock_sagas(p_calls jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_key bigint;
BEGIN
    FOR v_key IN
        SELECT DISTINCT hashtextextended((c.a->>1)::uuid::text, 0)
            FROM jsonb_array_elements(p_calls) AS c(a)
            ORDER BY 1
    LOOP
        PERFORM pg_advisory_xact_lock(v_key);
    END LOOP;
    RETURN p_calls;
END
$$;

-- The locks of a batch of reservations: every saga's, then every stock row any of its carts
-- names (each call's fourth argument), in SKU order. A batch used to lock cart after cart in
-- arrival order, so two instances' batches could take the same rows in opposite orders and
-- deadlock (each costing PostgreSQL's deadlock_timeout, and the batch's fallback to one action
-- at a time). Rows of SKUs that end up unchanged (a replayed or refused cart) are held to the
-- commit too: the price of one order for all.
CREATE FUNCTION inventory.lock_reserves(p_calls jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM inventory.lock_sagas(p_calls);
    PERFORM 1 FROM inventory.stock s
        WHERE s.sku IN (SELECT l.item->>'sku'
                        FROM jsonb_array_elements(p_calls) AS c(a)
                        CROSS JOIN LATERAL jsonb_array_elements(c.a->3) AS l(item))
        ORDER BY s.sku FOR UPDATE;
    RETURN p_calls;
END
$$;

-- The locks of a batch of releases: every saga's, then the stock rows that the batch's held
-- reservations name, in SKU order. Under the saga locks a saga's reservation cannot change,
-- so the rows read here are the rows release_once gives back to.
CREATE FUNCTION inventory.lock_releases(p_calls jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM inventory.lock_sagas(p_calls);
    PERFORM 1 FROM inventory.stock s
        WHERE s.sku IN (SELECT l.sku
                        FROM inventory.reservations r
                        CROSS JOIN LATERAL jsonb_to_recordset(r.items) AS l(sku text)
                        WHERE r.state = 'held'
                          AND r.saga_id IN (SELECT (c.a->>1)::uuid
                                            FROM jsonb_array_elements(p_calls) AS c(a)))
        ORDER BY s.sku FOR UPDATE;
    RETURN p_calls;
END
$$;
