-- A confirmation in two statements instead of a transaction of six round trips held open
-- while the mail service is called (docs/performance.md). The mail service is called between
-- them, outside any transaction; it takes the saga id as its idempotency key.

-- What an earlier delivery left: its stored reply, and the confirmation already sent for the
-- saga (whose processed-message row may have been cleared since). Read-only.
CREATE FUNCTION notification.sent_before(p_key text, p_saga uuid)
RETURNS TABLE (reply jsonb, confirmation_id uuid)
LANGUAGE sql STABLE AS $$
    SELECT (SELECT m.reply FROM notification.processed_messages m WHERE m.action_key = p_key),
           (SELECT c.confirmation_id FROM notification.confirmations c WHERE c.saga_id = p_saga)
$$;

-- Records the outcome of the attempts: the confirmation (one per saga: a concurrent delivery
-- that sent first keeps its own) or, when every attempt failed and none was ever sent, the
-- refusal (p_refusal); then the reply, under the saga's lock, replaying a stored one.
CREATE FUNCTION notification.confirm_once(
    p_key text, p_saga uuid, p_reply jsonb, p_refusal jsonb,
    p_confirmation uuid, p_order uuid, p_customer text, p_attempts integer)
RETURNS TABLE (reply jsonb, replayed boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_reply jsonb;
    v_id    uuid;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(p_saga::text, 0));
    SELECT m.reply INTO v_reply FROM notification.processed_messages m WHERE m.action_key = p_key;
    IF FOUND THEN
        RETURN QUERY SELECT v_reply, true;
        RETURN;
    END IF;
    IF p_refusal IS NULL THEN
        INSERT INTO notification.confirmations
            (saga_id, confirmation_id, order_id, customer_id, attempts)
            VALUES (p_saga, p_confirmation, p_order, p_customer, p_attempts)
            ON CONFLICT (saga_id) DO NOTHING;
    END IF;
    SELECT c.confirmation_id INTO v_id FROM notification.confirmations c WHERE c.saga_id = p_saga;
    IF FOUND THEN
        v_reply := p_reply || jsonb_build_object('outcome', 'step_succeeded', 'reference', v_id);
    ELSE
        v_reply := p_reply || jsonb_build_object('outcome', 'step_failed', 'reason', p_refusal);
    END IF;
    INSERT INTO notification.processed_messages (action_key, reply) VALUES (p_key, v_reply);
    RETURN QUERY SELECT v_reply, false;
END
$$;
