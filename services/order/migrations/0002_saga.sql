-- The saga timeout looks only at pending orders, oldest first.
CREATE INDEX orders_pending_since ON orders (created_at) WHERE status = 'pending';

-- WatchOrder: every instance LISTENs on 'order_status' and wakes the watchers of
-- the order named in the payload. NOTIFY is delivered on commit, so a watcher
-- never reads a change that might still roll back.
CREATE FUNCTION orders_notify_status() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('order_status', NEW.order_id::text);
    RETURN NULL;
END $$;
CREATE TRIGGER orders_status_changed AFTER UPDATE OF status ON orders
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION orders_notify_status();
