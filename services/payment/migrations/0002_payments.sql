-- One payment record per order: what the saga did about paying for it. The
-- ledger stays the money truth; this row is what makes the handlers idempotent
-- and safe in any order (claimed with INSERT ... ON CONFLICT DO NOTHING).
--   charged   one 'charge' ledger row for the order, no 'refund' row
--   refunded  one 'charge' and one 'refund' row
--   failed    no ledger rows (declined, or the wallet could not pay)
--   cancelled a tombstone: cancelled before any charge; no ledger rows, ever
--   pending   the claim of the delivery that is deciding; never committed
CREATE TABLE payments (
    order_id      uuid PRIMARY KEY,
    user_id       uuid NOT NULL,
    state         text NOT NULL
                  CHECK (state IN ('pending', 'charged', 'failed', 'refunded', 'cancelled')),
    amount_minor  bigint CHECK (amount_minor > 0),
    currency      char(3) CHECK (currency ~ '^[A-Z]{3}$'),
    reason        text CHECK (length(reason) BETWEEN 1 AND 500),
    charge_id     uuid REFERENCES ledger_entries (entry_id),
    refund_id     uuid REFERENCES ledger_entries (entry_id),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT payments_amount_whole CHECK ((amount_minor IS NULL) = (currency IS NULL)),
    -- Only a tombstone does not know what the order cost.
    CONSTRAINT payments_amount_known CHECK (state = 'cancelled' OR amount_minor IS NOT NULL),
    CONSTRAINT payments_charge_booked
        CHECK ((state IN ('charged', 'refunded')) = (charge_id IS NOT NULL)),
    CONSTRAINT payments_refund_booked CHECK ((state = 'refunded') = (refund_id IS NOT NULL)),
    CONSTRAINT payments_failure_explained CHECK (state <> 'failed' OR reason IS NOT NULL)
);

-- A claim is settled in the transaction that made it. Checked at commit (the
-- row's state then, not at insert), so a handler that forgot to settle fails
-- loudly instead of leaving an order that nothing will ever charge.
CREATE FUNCTION payments_refuse_pending() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM payments WHERE order_id = NEW.order_id AND state = 'pending') THEN
        RAISE EXCEPTION 'payment for order % is still pending at commit', NEW.order_id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER payments_settled_at_commit AFTER INSERT ON payments
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (NEW.state = 'pending') EXECUTE FUNCTION payments_refuse_pending();

