CREATE TABLE products (
    product_id   uuid PRIMARY KEY,
    sku          text NOT NULL UNIQUE,
    title        text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    description  text NOT NULL DEFAULT '',
    price_minor  bigint NOT NULL CHECK (price_minor > 0),
    currency     char(3) NOT NULL,
    status       text NOT NULL CHECK (status IN ('draft', 'active', 'archived')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Keyset pagination walks (created_at, product_id), optionally within one status.
CREATE INDEX products_page ON products (created_at, product_id);
CREATE INDEX products_status_page ON products (status, created_at, product_id);
