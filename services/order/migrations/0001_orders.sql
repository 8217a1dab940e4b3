CREATE TABLE orders (
    order_id         uuid PRIMARY KEY,
    user_id          uuid NOT NULL,
    status           text NOT NULL
                     CHECK (status IN ('pending', 'confirmed', 'rejected', 'cancelled')),
    total_minor      bigint NOT NULL CHECK (total_minor >= 0),
    currency         char(3) NOT NULL,
    idempotency_key  text NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 64),
    status_reason    text NOT NULL DEFAULT '',
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    -- PlaceOrder is idempotent per caller; the repository relies on this name.
    CONSTRAINT orders_user_idempotency_key UNIQUE (user_id, idempotency_key),
    -- Only a rejected or cancelled order says why.
    CONSTRAINT orders_status_reason
        CHECK ((status IN ('rejected', 'cancelled')) = (status_reason <> ''))
);

-- ListOrders walks one user's orders newest first.
CREATE INDEX orders_user_page ON orders (user_id, created_at DESC, order_id DESC);

CREATE TABLE order_items (
    order_id          uuid NOT NULL REFERENCES orders (order_id) ON DELETE CASCADE,
    product_id        uuid NOT NULL,
    sku               text NOT NULL,
    quantity          int NOT NULL CHECK (quantity BETWEEN 1 AND 100),
    unit_price_minor  bigint NOT NULL CHECK (unit_price_minor > 0),
    currency          char(3) NOT NULL,
    PRIMARY KEY (order_id, product_id)
);
