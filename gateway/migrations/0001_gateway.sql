-- The gateway's own state (its instances are stateless): sessions, carts, and the
-- answers stored under Idempotency-Keys. gateway/sessions.py, carts.py, idempotency.py.

-- A browser session: the id is 256 random bits, given to the browser once and stored
-- only hashed (SHA-256), so a read of this table lets no one act as a session.
-- data: the tokens, a login in progress (PKCE verifier, state), the CSRF secret.
CREATE TABLE sessions (
    id_hash     bytea PRIMARY KEY,
    data        jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX sessions_expires_at ON sessions (expires_at);

-- A signed-in user's cart (the gateway's own state, a backend-for-frontend's).
CREATE TABLE cart_items (
    user_id     uuid NOT NULL,
    sku         text NOT NULL,
    product_id  uuid NOT NULL,
    quantity    integer NOT NULL CHECK (quantity BETWEEN 1 AND 100),
    added_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, sku)
);

-- One row per (user, Idempotency-Key): the request's fingerprint, and once done the
-- response that every replay gets. status: 'in_flight' or 'done'. user_id is the
-- token's subject.
CREATE TABLE idempotency_keys (
    user_id          text NOT NULL,
    key              text NOT NULL,
    fingerprint      text NOT NULL,
    status           text NOT NULL CHECK (status IN ('in_flight', 'done')),
    response_status  integer,
    response_body    jsonb,
    -- The headers a replay must repeat (Location), not the whole set.
    response_headers jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
