-- One row per SKU: a small ledger in which every unit ever received is
-- available, reserved (held for an unpaid order) or sold. Reservations will
-- reference these rows by SKU.
CREATE TABLE stock (
    sku             text PRIMARY KEY CHECK (sku ~ '^[A-Z0-9][A-Z0-9-]{1,63}$'),
    available       bigint NOT NULL CHECK (available >= 0),
    reserved        bigint NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    sold            bigint NOT NULL DEFAULT 0 CHECK (sold >= 0),
    total_received  bigint NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT stock_ledger_balanced CHECK (available + reserved + sold = total_received)
);
