-- A charge delivered again after retention pruned its processed-message row found the
-- ledger's one-charge-per-saga key taken, failed, and was retried until JetStream gave it
-- up. The ledger is the record: the charge already there is the answer.
CREATE OR REPLACE FUNCTION payment.charge_once(
    p_key text, p_saga uuid, p_reply jsonb, p_refusal jsonb,
    p_entry uuid, p_customer text, p_amount bigint)
RETURNS TABLE (reply jsonb, replayed boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_reply   jsonb;
    v_charged uuid;
BEGIN
    -- A charge and its refund must not run side by side: each would miss the other's
    -- uncommitted row and both commit.
    PERFORM pg_advisory_xact_lock(hashtextextended(p_saga::text, 0));
    SELECT m.reply INTO v_reply FROM payment.processed_messages m WHERE m.action_key = p_key;
    IF FOUND THEN
        RETURN QUERY SELECT v_reply, true;
        RETURN;
    END IF;
    SELECT l.entry_id INTO v_charged FROM payment.ledger l
        WHERE l.saga_id = p_saga AND l.kind = 'charge';
    IF FOUND THEN
        v_reply := p_reply || jsonb_build_object('outcome', 'step_succeeded',
                                                 'reference', v_charged);
    ELSIF p_refusal IS NOT NULL THEN
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
