-- One wallet per user. The balance is kept in place (for atomic increments and
-- the non-negative check) and is always derivable from the ledger:
--   balance_minor = sum(topup + refund) - sum(charge)
CREATE TABLE wallets (
    user_id        uuid PRIMARY KEY,
    balance_minor  bigint NOT NULL CHECK (balance_minor >= 0),
    currency       char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ledger_entries (
    entry_id         uuid PRIMARY KEY,
    user_id          uuid NOT NULL REFERENCES wallets (user_id),
    kind             text NOT NULL CHECK (kind IN ('topup', 'charge', 'refund')),
    amount_minor     bigint NOT NULL CHECK (amount_minor > 0),
    currency         char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    -- The client's key for top-ups; charges and refunds are keyed by their order.
    idempotency_key  text CHECK (length(idempotency_key) BETWEEN 1 AND 64),
    order_id         uuid,
    created_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ledger_topup_has_key CHECK (kind <> 'topup' OR idempotency_key IS NOT NULL),
    CONSTRAINT ledger_order_entry_has_order CHECK (kind = 'topup' OR order_id IS NOT NULL),
    -- A retried top-up finds its first attempt here instead of crediting twice.
    CONSTRAINT ledger_idempotency UNIQUE (user_id, kind, idempotency_key)
);

-- An order is charged at most once and refunded at most once, whatever the
-- saga redelivers.
CREATE UNIQUE INDEX ledger_one_charge_per_order ON ledger_entries (order_id)
    WHERE kind = 'charge';
CREATE UNIQUE INDEX ledger_one_refund_per_order ON ledger_entries (order_id)
    WHERE kind = 'refund';

-- A wallet's history (and the audit's per-wallet sums).
CREATE INDEX ledger_by_wallet ON ledger_entries (user_id, created_at);
