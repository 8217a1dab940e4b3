"""The statements of the reservation repository (reservations.py), one per step it takes.

Most are one round trip for what would otherwise be several: data-modifying CTEs
that claim, insert lines and move stock in one statement.
"""

from __future__ import annotations

CLAIM_AND_HOLD_ONE = """
WITH claimed AS (
    INSERT INTO reservations (order_id, state, user_id, total_minor, currency)
    VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (order_id) DO NOTHING
    RETURNING order_id
), line AS (
    INSERT INTO reservation_lines (order_id, sku, quantity)
    SELECT order_id, $6::text, $7::int FROM claimed
), held AS (
    UPDATE stock
    SET available = available - $7::int, reserved = reserved + $7::int, updated_at = now()
    WHERE sku = $6::text AND available >= $7::int AND EXISTS (SELECT FROM claimed)
    RETURNING sku
)
SELECT EXISTS (SELECT FROM claimed) AS claimed, EXISTS (SELECT FROM held) AS held
"""
CLAIM_MANY = """
INSERT INTO reservations (order_id, state, user_id, total_minor, currency)
SELECT o, $2, u, t, c
FROM unnest($1::uuid[], $3::uuid[], $4::bigint[], $5::text[]) AS x (o, u, t, c)
ON CONFLICT (order_id) DO NOTHING
RETURNING order_id
"""
# The lines of every claimed order, and the claims that got nothing settled as rejected.
SETTLE_SAME_SKU = """
WITH lines AS (
    INSERT INTO reservation_lines (order_id, sku, quantity)
    SELECT order_id, $1::text, qty FROM unnest($2::uuid[], $3::int[]) AS r (order_id, qty)
)
UPDATE reservations SET state = $6, reason = $7, updated_at = now()
WHERE order_id = ANY($4::uuid[]) AND state = $5
"""
CLAIM = """
WITH claimed AS (
    INSERT INTO reservations (order_id, state, user_id, total_minor, currency)
    VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (order_id) DO NOTHING
    RETURNING order_id
), lines AS (
    INSERT INTO reservation_lines (order_id, sku, quantity)
    SELECT claimed.order_id, line.sku, line.quantity
    FROM claimed, unnest($6::text[], $7::int[]) AS line (sku, quantity)
)
SELECT count(*) FROM claimed
"""
# The rows are locked in SKU order first (the CTE), then each is held only if it
# still has enough available; RETURNING says which ones were.
HOLD_MANY = """
WITH line AS (
    SELECT * FROM unnest($1::text[], $2::int[]) AS line (sku, quantity)
), locked AS (
    SELECT stock.sku, line.quantity
    FROM stock JOIN line USING (sku)
    ORDER BY stock.sku
    FOR UPDATE OF stock
)
UPDATE stock
SET available = stock.available - locked.quantity,
    reserved = stock.reserved + locked.quantity,
    updated_at = now()
FROM locked
WHERE stock.sku = locked.sku AND stock.available >= locked.quantity
RETURNING stock.sku
"""
# FOR UPDATE, not a plain read: the decision taken on this state holds until commit.
LOCK_OR_CREATE = """
WITH existing AS (
    SELECT state FROM reservations WHERE order_id = $1::uuid FOR UPDATE
), created AS (
    INSERT INTO reservations (order_id, state, user_id, reason)
    SELECT $1::uuid, $2::text, $3::uuid, $4::text
    WHERE NOT EXISTS (SELECT FROM existing)
    ON CONFLICT (order_id) DO NOTHING
    RETURNING order_id
)
SELECT (SELECT state FROM existing) AS existing, EXISTS (SELECT FROM created) AS created
"""
# The reservation row first, then its stock rows in SKU order: the order in which
# every handler takes its locks, so two events cannot deadlock each other.
ADVANCE = """
WITH moved AS (
    UPDATE reservations SET state = $3, reason = $4, updated_at = now()
    WHERE order_id = $1 AND state = $2
    RETURNING order_id
), locked AS (
    SELECT stock.sku, line.quantity
    FROM moved
    JOIN reservation_lines AS line USING (order_id)
    JOIN stock USING (sku)
    ORDER BY stock.sku
    FOR UPDATE OF stock
), changed AS (
    UPDATE stock
    SET available = stock.available + $5::int * locked.quantity,
        reserved = stock.reserved + $6::int * locked.quantity,
        sold = stock.sold + $7::int * locked.quantity,
        updated_at = now()
    FROM locked
    WHERE stock.sku = locked.sku
    RETURNING stock.sku
)
SELECT EXISTS (SELECT FROM moved) AS moved,
       (SELECT count(*) FROM changed) AS changed,
       (SELECT count(*) FROM reservation_lines WHERE order_id = $1) AS lines
"""
