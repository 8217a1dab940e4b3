-- One reservation per order the saga has told inventory about. The order id is
-- the key: the first event about an order (OrderCreated, or an early
-- OrderCancelled leaving a tombstone) claims it, and every later event finds it.
-- The states and what moves them are services/inventory/domain.py; these CHECKs
-- are the second guard. The audit's invariants are plain SQL over these tables:
--   stock.reserved = sum(quantity) of the SKU's lines in 'reserved' reservations
--   stock.sold     = sum(quantity) of the SKU's lines in 'committed' reservations
CREATE TABLE reservations (
    order_id     uuid PRIMARY KEY,
    state        text NOT NULL
                 CHECK (state IN ('reserved', 'committed', 'released', 'rejected', 'cancelled')),
    user_id      uuid NOT NULL,
    -- The order's total, which InventoryReserved hands on to payment.
    total_minor  bigint CHECK (total_minor > 0),
    currency     char(3) CHECK (currency ~ '^[A-Z]{3}$'),
    reason       text NOT NULL DEFAULT '' CHECK (length(reason) <= 500),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    -- Only a tombstone (cancelled before it was created) does not know the total.
    CONSTRAINT reservations_total_known
        CHECK ((total_minor IS NULL) = (state = 'cancelled')
               AND (currency IS NULL) = (total_minor IS NULL)),
    -- A reservation that ended without a sale says why; a live or paid one does not.
    CONSTRAINT reservations_reason
        CHECK ((state IN ('reserved', 'committed')) = (reason = ''))
);

-- What the order asked for, one row per SKU. No foreign key to stock: an
-- unknown SKU is a line that is out of stock, and its order is rejected.
CREATE TABLE reservation_lines (
    order_id  uuid NOT NULL REFERENCES reservations (order_id),
    sku       text NOT NULL CHECK (sku ~ '^[A-Z0-9][A-Z0-9-]{1,63}$'),
    quantity  integer NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, sku)
);
