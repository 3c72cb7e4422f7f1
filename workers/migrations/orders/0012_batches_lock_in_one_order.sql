-- Takes the advisory lock of every saga in a batch (each call's second argument), in the
-- order of the locks' keys, and returns the batch unchanged: the group statement reads its
-- calls from this function's result, so no call runs before every lock is held. Each
-- `*_once` function still takes its saga's lock (a no-op by then). Batches of
-- different instances, and of different services on one database (advisory locks have one
-- key space per database), thus take their saga locks in one global order and cannot
-- deadlock on them, whatever order their actions came in.
CREATE FUNCTION orders.lock_sagas(p_calls jsonb) RETURNS jsonb
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
