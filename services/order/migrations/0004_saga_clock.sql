-- The saga clock: seconds of time in which the saga could move (PostgreSQL reachable,
-- an order instance's Kafka link healthy, the outbox draining), advanced by the saga
-- timeout task of whichever order instance runs a round (services/order/saga_timeout.py).
-- An order is overdue once the clock has moved saga_timeout_seconds past its placing,
-- so an outage that heals in seconds does not eat the order's time.
CREATE TABLE saga_clock (
    -- One row, ever: the primary key can only be true.
    only_row     boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    seconds      double precision NOT NULL DEFAULT 0 CHECK (seconds >= 0),
    advanced_at  timestamptz NOT NULL DEFAULT now(),
    -- The most a gap between two advances counts (set by each advance; see placed_clock).
    cap_seconds  double precision NOT NULL DEFAULT 3 CHECK (cap_seconds > 0)
);
INSERT INTO saga_clock DEFAULT VALUES;

-- The clock's value when the order was placed, set by the same INSERT: its last value
-- plus the time since that advance, up to the cap, which is what the next advance will
-- add for that time. So the clock never counts more for an order than the wall time it
-- has waited. Orders already there get the clock's value now (0), so they are not all
-- overdue at once: each gets a full timeout of healthy time from here.
ALTER TABLE orders ADD COLUMN placed_clock double precision NOT NULL DEFAULT 0;
-- From now on every INSERT must say it (the repository reads the clock).
ALTER TABLE orders ALTER COLUMN placed_clock DROP DEFAULT;

-- The saga timeout looks for pending orders whose clock time is up.
CREATE INDEX orders_pending_clock ON orders (placed_clock) WHERE status = 'pending';
