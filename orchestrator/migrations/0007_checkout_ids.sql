-- One claim per checkout id, taken by whichever comes first: the saga the checkout started,
-- or the refusal it got at the door. Before this table each insert checked the other table
-- for the id, but each check read its own snapshot, so two orchestrators handling a valid and
-- a refused copy of one id at the same moment could both commit: a charged saga whose later
-- deliveries announced `rejected`. A unique key makes the second claimant wait for the
-- first and then find the id taken.
CREATE TABLE saga.checkout_ids (
    saga_id uuid PRIMARY KEY
);

INSERT INTO saga.checkout_ids (saga_id)
    SELECT saga_id FROM saga.sagas
    UNION
    SELECT saga_id FROM saga.rejections;
