-- One statement per action: see inventory's 0010 migration for the pattern. A refusal the
-- worker decides without the database (a failing test customer) comes in as p_refusal.

CREATE FUNCTION orders.create_once(
    p_key text, p_saga uuid, p_reply jsonb, p_refusal jsonb,
    p_order uuid, p_customer text, p_items jsonb, p_amount bigint)
RETURNS TABLE (reply jsonb, replayed boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_reply  jsonb;
    v_status text;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(p_saga::text, 0));
    SELECT m.reply INTO v_reply FROM orders.processed_messages m WHERE m.action_key = p_key;
    IF FOUND THEN
        RETURN QUERY SELECT v_reply, true;
        RETURN;
    END IF;
    IF p_refusal IS NOT NULL THEN
        v_reply := p_reply || jsonb_build_object('outcome', 'step_failed', 'reason', p_refusal);
    ELSE
        SELECT o.status INTO v_status FROM orders.orders o WHERE o.saga_id = p_saga;
        IF FOUND THEN
            -- 'void' is the tombstone of a cancel that came first.
            v_reply := p_reply || jsonb_build_object('outcome', 'step_failed', 'reason',
                jsonb_build_object(
                    'code', CASE v_status WHEN 'created' THEN 'already_done'
                                          ELSE 'cancelled_before_done' END,
                    'message', format('order already %s for this saga', v_status)));
        ELSE
            INSERT INTO orders.orders
                (saga_id, order_id, customer_id, items, amount_cents, status)
                VALUES (p_saga, p_order, p_customer, p_items, p_amount, 'created');
            v_reply := p_reply || jsonb_build_object('outcome', 'step_succeeded',
                                                     'reference', p_order);
        END IF;
    END IF;
    INSERT INTO orders.processed_messages (action_key, reply) VALUES (p_key, v_reply);
    RETURN QUERY SELECT v_reply, false;
END
$$;

-- Cancels the order; with none, leaves a tombstone (p_tombstone) so a late create is refused.
CREATE FUNCTION orders.cancel_once(p_key text, p_saga uuid, p_reply jsonb, p_tombstone uuid)
RETURNS TABLE (reply jsonb, replayed boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_reply jsonb;
    v_ref   uuid;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(p_saga::text, 0));
    SELECT m.reply INTO v_reply FROM orders.processed_messages m WHERE m.action_key = p_key;
    IF FOUND THEN
        RETURN QUERY SELECT v_reply, true;
        RETURN;
    END IF;
    UPDATE orders.orders o SET status = 'cancelled', cancelled_at = now()
        WHERE o.saga_id = p_saga AND o.status = 'created' RETURNING o.order_id INTO v_ref;
    IF NOT FOUND THEN
        INSERT INTO orders.orders (saga_id, order_id, customer_id, items, amount_cents, status)
            VALUES (p_saga, p_tombstone, '', '[]', 0, 'void') ON CONFLICT (saga_id) DO NOTHING;
    END IF;
    v_reply := p_reply || jsonb_build_object('outcome', 'step_succeeded', 'reference', v_ref);
    INSERT INTO orders.processed_messages (action_key, reply) VALUES (p_key, v_reply);
    RETURN QUERY SELECT v_reply, false;
END
$$;
