-- One statement per action (docs/performance.md): each function locks the saga, replays a
-- stored reply, decides, acts and records the reply inside the caller's one statement, so an
-- action costs one round trip and one commit, and no transaction sits idle between round
-- trips. The functions are VOLATILE (the default): each statement in them takes a fresh
-- snapshot, so the replay check made after the lock sees a reply its holder committed.
-- A refusal is decided before anything is changed, so it has nothing to roll back.
-- The reply's JSON is the worker's `Reply`: p_reply carries saga_id, step and phase, and the
-- function adds the outcome.

-- Reserves every line of the cart (p_items, sorted by SKU), or refuses it. Besides the
-- reply, returns what it decided for each line, in cart order, as a JSON array of
-- {sku, requested, available, ok}, so that the worker can trace one span per line (NULL
-- when nothing was decided per line: a replayed reply, or a tombstone). `available` is what
-- the line could take: the SKU's stock less the earlier lines of this cart with the same SKU
-- (NULL for an unknown SKU).
CREATE FUNCTION inventory.reserve_once(
    p_key text, p_saga uuid, p_reply jsonb, p_items jsonb, p_reservation uuid)
RETURNS TABLE (reply jsonb, replayed boolean, lines jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    v_reply  jsonb;
    v_state  text;
    v_lines  jsonb;
    v_failed jsonb;
BEGIN
    -- One saga's action and undo must not run side by side in this service.
    PERFORM pg_advisory_xact_lock(hashtextextended(p_saga::text, 0));
    SELECT m.reply INTO v_reply FROM inventory.processed_messages m WHERE m.action_key = p_key;
    IF FOUND THEN
        RETURN QUERY SELECT v_reply, true, NULL::jsonb;
        RETURN;
    END IF;
    SELECT r.state INTO v_state FROM inventory.reservations r WHERE r.saga_id = p_saga;
    IF FOUND THEN
        -- 'void' is the tombstone of a release that came first; 'released' is the same
        -- decision made after a reservation whose record was cleared.
        v_reply := p_reply || jsonb_build_object('outcome', 'step_failed', 'reason',
            jsonb_build_object(
                'code', CASE v_state WHEN 'held' THEN 'already_done'
                                     ELSE 'cancelled_before_done' END,
                'message', format('reservation already %s for this saga', v_state)));
    ELSE
        -- Lock the rows in SKU order so that carts sharing SKUs cannot deadlock, then check
        -- every line before changing any.
        PERFORM 1 FROM inventory.stock s
            WHERE s.sku IN (SELECT e.item->>'sku' FROM jsonb_array_elements(p_items) AS e(item))
            ORDER BY s.sku FOR UPDATE;
        SELECT coalesce(jsonb_agg(jsonb_build_object(
                   'sku', c.sku, 'requested', c.requested, 'available', c.available,
                   'ok', coalesce(c.available >= c.requested, false)) ORDER BY c.n), '[]')
            INTO v_lines
            FROM (SELECT e.n, e.item->>'sku' AS sku, (e.item->>'quantity')::integer AS requested,
                         -- (greatest ignores NULLs: an unknown SKU keeps its NULL.)
                         CASE WHEN s.sku IS NOT NULL THEN
                             greatest(s.available - coalesce(sum((e.item->>'quantity')::integer)
                                 OVER (PARTITION BY e.item->>'sku' ORDER BY e.n
                                       ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0),
                                 0)
                         END AS available
                  FROM jsonb_array_elements(p_items) WITH ORDINALITY AS e(item, n)
                  LEFT JOIN inventory.stock s ON s.sku = e.item->>'sku') c;
        SELECT l.line INTO v_failed
            FROM jsonb_array_elements(v_lines) WITH ORDINALITY AS l(line, n)
            WHERE NOT (l.line->>'ok')::boolean
            ORDER BY l.n LIMIT 1;
        IF FOUND THEN
            v_reply := p_reply || jsonb_build_object('outcome', 'step_failed', 'reason',
                CASE WHEN v_failed->'available' = 'null'::jsonb THEN
                    jsonb_build_object('code', 'unknown_sku',
                                       'message', format('unknown sku %s', v_failed->>'sku'))
                ELSE
                    jsonb_build_object('code', 'out_of_stock',
                                       'message', format('%s wants %s, %s available',
                                                         v_failed->>'sku',
                                                         v_failed->>'requested',
                                                         v_failed->>'available'))
                END);
        ELSE
            UPDATE inventory.stock s SET available = s.available - l.wanted, updated_at = now()
                FROM (SELECT x.sku, sum(x.quantity)::integer AS wanted
                      FROM jsonb_to_recordset(p_items) AS x(sku text, quantity integer)
                      GROUP BY x.sku) l
                WHERE s.sku = l.sku;
            INSERT INTO inventory.reservations (saga_id, reservation_id, items, state)
                VALUES (p_saga, p_reservation, p_items, 'held');
            v_reply := p_reply || jsonb_build_object('outcome', 'step_succeeded',
                                                     'reference', p_reservation);
        END IF;
    END IF;
    INSERT INTO inventory.processed_messages (action_key, reply) VALUES (p_key, v_reply);
    RETURN QUERY SELECT v_reply, false, v_lines;
END
$$;

-- Gives back what the saga holds. With nothing held, leaves a tombstone (p_tombstone) so
-- that a late reservation is refused.
CREATE FUNCTION inventory.release_once(
    p_key text, p_saga uuid, p_reply jsonb, p_tombstone uuid)
RETURNS TABLE (reply jsonb, replayed boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_reply jsonb;
    v_id    uuid;
    v_items jsonb;
    v_state text;
    v_ref   uuid;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(p_saga::text, 0));
    SELECT m.reply INTO v_reply FROM inventory.processed_messages m WHERE m.action_key = p_key;
    IF FOUND THEN
        RETURN QUERY SELECT v_reply, true;
        RETURN;
    END IF;
    SELECT r.reservation_id, r.items, r.state INTO v_id, v_items, v_state
        FROM inventory.reservations r WHERE r.saga_id = p_saga FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO inventory.reservations (saga_id, reservation_id, items, state)
            VALUES (p_saga, p_tombstone, '[]', 'void');
    ELSIF v_state = 'held' THEN
        PERFORM 1 FROM inventory.stock s
            WHERE s.sku IN (SELECT l.sku FROM jsonb_to_recordset(v_items) AS l(sku text))
            ORDER BY s.sku FOR UPDATE;
        UPDATE inventory.stock s SET available = s.available + l.held, updated_at = now()
            FROM (SELECT x.sku, sum(x.quantity)::integer AS held
                  FROM jsonb_to_recordset(v_items) AS x(sku text, quantity integer)
                  GROUP BY x.sku) l
            WHERE s.sku = l.sku;
        UPDATE inventory.reservations SET state = 'released', released_at = now()
            WHERE saga_id = p_saga;
        v_ref := v_id;
    END IF;
    v_reply := p_reply || jsonb_build_object('outcome', 'step_succeeded', 'reference', v_ref);
    INSERT INTO inventory.processed_messages (action_key, reply) VALUES (p_key, v_reply);
    RETURN QUERY SELECT v_reply, false;
END
$$;
