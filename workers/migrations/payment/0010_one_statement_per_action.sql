-- One statement per action: see inventory's 0010 migration for the pattern. The card
-- gateway's decision is made by the worker before this statement (the gateway is not the
-- database): a decline comes in as p_refusal and is stored like any other decision, after
-- the replay check; an approval comes in as p_entry, the gateway's charge id, which becomes
-- the ledger entry's id.

CREATE FUNCTION payment.charge_once(
    p_key text, p_saga uuid, p_reply jsonb, p_refusal jsonb,
    p_entry uuid, p_customer text, p_amount bigint)
RETURNS TABLE (reply jsonb, replayed boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_reply jsonb;
BEGIN
    -- A charge and its refund must not run side by side: each would miss the other's
    -- uncommitted row and both commit.
    PERFORM pg_advisory_xact_lock(hashtextextended(p_saga::text, 0));
    SELECT m.reply INTO v_reply FROM payment.processed_messages m WHERE m.action_key = p_key;
    IF FOUND THEN
        RETURN QUERY SELECT v_reply, true;
        RETURN;
    END IF;
    IF p_refusal IS NOT NULL THEN
        v_reply := p_reply || jsonb_build_object('outcome', 'step_failed', 'reason', p_refusal);
    ELSIF EXISTS (SELECT 1 FROM payment.ledger l
                  WHERE l.saga_id = p_saga AND l.kind = 'refund') THEN
        -- The refund came first and left its zero-amount tombstone.
        v_reply := p_reply || jsonb_build_object('outcome', 'step_failed', 'reason',
            jsonb_build_object('code', 'cancelled_before_done',
                               'message', 'payment already voided for this saga'));
    ELSE
        INSERT INTO payment.ledger (saga_id, kind, entry_id, customer_id, amount_cents)
            VALUES (p_saga, 'charge', p_entry, p_customer, p_amount);
        v_reply := p_reply || jsonb_build_object('outcome', 'step_succeeded',
                                                 'reference', p_entry);
    END IF;
    INSERT INTO payment.processed_messages (action_key, reply) VALUES (p_key, v_reply);
    RETURN QUERY SELECT v_reply, false;
END
$$;

-- Refunds the charge; with no charge, records a zero refund so a late charge is refused.
CREATE FUNCTION payment.refund_once(p_key text, p_saga uuid, p_reply jsonb, p_entry uuid)
RETURNS TABLE (reply jsonb, replayed boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_reply    jsonb;
    v_customer text := '';
    v_amount   bigint := 0;
    v_rows     integer;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(p_saga::text, 0));
    SELECT m.reply INTO v_reply FROM payment.processed_messages m WHERE m.action_key = p_key;
    IF FOUND THEN
        RETURN QUERY SELECT v_reply, true;
        RETURN;
    END IF;
    SELECT l.customer_id, l.amount_cents INTO v_customer, v_amount
        FROM payment.ledger l WHERE l.saga_id = p_saga AND l.kind = 'charge' FOR UPDATE;
    IF NOT FOUND THEN
        v_customer := '';
        v_amount := 0;
    END IF;
    INSERT INTO payment.ledger (saga_id, kind, entry_id, customer_id, amount_cents)
        VALUES (p_saga, 'refund', p_entry, v_customer, v_amount)
        ON CONFLICT (saga_id, kind) DO NOTHING;
    GET DIAGNOSTICS v_rows = ROW_COUNT;
    v_reply := p_reply || jsonb_build_object('outcome', 'step_succeeded', 'reference',
        CASE WHEN v_rows = 1 AND v_amount > 0 THEN p_entry END);
    INSERT INTO payment.processed_messages (action_key, reply) VALUES (p_key, v_reply);
    RETURN QUERY SELECT v_reply, false;
END
$$;
