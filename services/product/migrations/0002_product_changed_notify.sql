-- Every change to a product is announced to the instances' catalog caches
-- (services/product/persistence/catalog_cache.py). PostgreSQL delivers a notification only once
-- its transaction committed, and not at all if it rolled back.
CREATE FUNCTION product_changed_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('product_changed', OLD.product_id::text);
    ELSE
        PERFORM pg_notify('product_changed', NEW.product_id::text);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER product_changed AFTER INSERT OR UPDATE OR DELETE ON products
    FOR EACH ROW EXECUTE FUNCTION product_changed_notify();
-- A TRUNCATE names no row: an empty payload tells the caches to drop everything.
CREATE FUNCTION products_truncated_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('product_changed', '');
    RETURN NULL;
END $$;
CREATE TRIGGER products_truncated AFTER TRUNCATE ON products
    FOR EACH STATEMENT EXECUTE FUNCTION products_truncated_notify();
