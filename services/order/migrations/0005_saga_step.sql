-- How far the order's saga got, apart from its status (services/order/domain.py's
-- OrderStep): placed, then reserved (InventoryReserved), charged (PaymentSucceeded),
-- committed (InventoryCommitted, a confirmed order). It only moves forward, while the
-- order is pending; a final status keeps the furthest step reached.
ALTER TABLE orders ADD COLUMN step text NOT NULL DEFAULT 'placed'
    CONSTRAINT orders_step CHECK (step IN ('placed', 'reserved', 'charged', 'committed'));

-- Orders already there get what their status shows: a confirmed order went all the way,
-- one cancelled because its payment failed was reserved (payment charges only then).
-- A pending order's earlier steps went unheard (the service did not subscribe to them):
-- it stays placed until its next step or outcome.
UPDATE orders SET step = 'committed' WHERE status = 'confirmed';
UPDATE orders SET step = 'reserved'
    WHERE status = 'cancelled' AND status_reason LIKE 'payment failed:%';

-- WatchOrder streams every step too: the trigger of 0002_saga.sql fires on a step change
-- as well as on a status change (the function, and so the channel, stay the same).
DROP TRIGGER orders_status_changed ON orders;
CREATE TRIGGER orders_status_changed AFTER UPDATE OF status, step ON orders
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.step IS DISTINCT FROM NEW.step)
    EXECUTE FUNCTION orders_notify_status();
