-- The token signing keys (services/user/adapters/keyring.py). Every user instance reads them, so
-- replicas share one set; only their public halves leave the service (the JWKS in etcd).
-- The private keys are stored unencrypted: see the README ("Signing keys and rotation").
CREATE TABLE signing_keys (
    kid              text PRIMARY KEY CHECK (length(kid) BETWEEN 1 AND 64),
    private_key_pem  text NOT NULL CHECK (private_key_pem LIKE '-----BEGIN PRIVATE KEY-----%'),
    created_at       timestamptz NOT NULL,
    -- When a newer key took over; the key is deleted once its last token has expired.
    retired_at       timestamptz
);
