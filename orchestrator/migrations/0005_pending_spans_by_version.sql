-- Pending spans are kept by the transition (version) that wrote them, with when it did:
-- {"<version>": {"at": <epoch seconds>, "spans": [...]}}. A confirmation then forgets only
-- the transition it confirms; before, it forgot every earlier transition's spans too, and a
-- transition whose writer never emitted its spans (the answer to its write lost with the
-- connection) lost them for good once the next transition was confirmed.
-- Spans pending from before this migration were never confirmed: they are kept as the
-- current version's, dated by the row's last change.
UPDATE saga.sagas
SET pending_spans = jsonb_build_object(
        version::text,
        jsonb_build_object('at', extract(epoch FROM updated_at), 'spans', pending_spans))
WHERE jsonb_typeof(pending_spans) = 'array';
