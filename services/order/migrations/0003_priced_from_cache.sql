-- PlaceOrder priced the order from the order service's last known catalog entries
-- while the product service was unreachable (degraded mode); false for a live price.
ALTER TABLE orders ADD COLUMN priced_from_cache boolean NOT NULL DEFAULT false;
