-- The payment token is a secret only the charge needs: from this release on, a saga forgets it
-- in the transition after which it can no longer send the charge (the refund needs only the
-- charge's reference). Rows written before keep it; this clears it from every saga that can no
-- longer charge: ended, compensating or stuck, or running past the charge (any step but the
-- two the plans put before or at it, inventory and payment; releases before plans stored the
-- step as a position, 0 and 1).
UPDATE saga.sagas
SET state = jsonb_set(state, '{data,request,payment_token}', '""')
WHERE coalesce(state #>> '{data,request,payment_token}', '') <> ''
  AND NOT (
      status = 'running'
      AND state ->> 'phase' = 'do'
      AND NOT coalesce((state ->> 'follow_up')::boolean, false)
      AND coalesce(state ->> 'step',
                   CASE state ->> 'cursor' WHEN '0' THEN 'inventory' WHEN '1' THEN 'payment' END)
          IN ('inventory', 'payment')
  );
