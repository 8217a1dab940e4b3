-- The OAuth2 / OpenID Connect authorization server (services/user/adapters/oauth/). Every secret
-- a caller presents (client secret, code, refresh token, login cookie) is a 32-byte-or-more
-- random string stored only as its SHA-256 (hex): a leaked table holds nothing usable.

-- Declared in the clients file (SHOP_USER_OAUTH_CLIENTS_FILE) and upserted at start-up.
CREATE TABLE oauth_clients (
    client_id      text PRIMARY KEY CHECK (client_id ~ '^[A-Za-z0-9._-]{1,64}$'),
    name           text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    -- NULL for a public client (a browser app or a CLI: PKCE is its proof).
    secret_hash    text CHECK (secret_hash ~ '^[0-9a-f]{64}$'),
    confidential   boolean NOT NULL GENERATED ALWAYS AS (secret_hash IS NOT NULL) STORED,
    redirect_uris  text[] NOT NULL DEFAULT '{}',
    grant_types    text[] NOT NULL CHECK (grant_types <@ ARRAY['authorization_code',
                   'refresh_token', 'client_credentials']::text[]),
    scopes         text[] NOT NULL DEFAULT '{}',
    -- The project's own apps (the storefront): no consent page.
    first_party    boolean NOT NULL DEFAULT false,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    -- A machine client has a secret; a client that redirects has somewhere to redirect to.
    CHECK (NOT 'client_credentials' = ANY(grant_types) OR secret_hash IS NOT NULL),
    CHECK (NOT 'authorization_code' = ANY(grant_types) OR cardinality(redirect_uris) > 0)
);

-- One row per code; single use (used_at), 60 s, bound to its client and redirect URI.
CREATE TABLE oauth_codes (
    code_hash       text PRIMARY KEY CHECK (code_hash ~ '^[0-9a-f]{64}$'),
    client_id       text NOT NULL REFERENCES oauth_clients ON DELETE CASCADE,
    user_id         uuid NOT NULL REFERENCES users ON DELETE CASCADE,
    redirect_uri    text NOT NULL,
    scopes          text[] NOT NULL,
    code_challenge  text NOT NULL CHECK (code_challenge ~ '^[A-Za-z0-9_-]{43}$'),
    -- Only S256 is ever accepted; the column says so rather than assuming it.
    code_challenge_method text NOT NULL CHECK (code_challenge_method = 'S256'),
    nonce           text,
    auth_time       timestamptz NOT NULL,
    created_at      timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL,
    used_at         timestamptz,
    -- The refresh-token family the code was exchanged for: revoked if the code comes back.
    family_id       uuid
);
CREATE INDEX oauth_codes_expiry ON oauth_codes (expires_at);

-- Rotated on every use: a family is one login's chain of refresh tokens. Presenting a token
-- already used (or revoked) revokes the whole family.
CREATE TABLE oauth_refresh_tokens (
    token_hash    text PRIMARY KEY CHECK (token_hash ~ '^[0-9a-f]{64}$'),
    family_id     uuid NOT NULL,
    client_id     text NOT NULL REFERENCES oauth_clients ON DELETE CASCADE,
    user_id       uuid NOT NULL REFERENCES users ON DELETE CASCADE,
    scopes        text[] NOT NULL,
    auth_time     timestamptz NOT NULL,
    -- The access token issued with it (its jti), so revoking the family refuses that too
    -- at the authorization server's own endpoints.
    access_jti    text NOT NULL,
    created_at    timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    used_at       timestamptz,
    revoked_at    timestamptz
);
CREATE INDEX oauth_refresh_tokens_family ON oauth_refresh_tokens (family_id);
CREATE INDEX oauth_refresh_tokens_jti ON oauth_refresh_tokens (access_jti);
CREATE INDEX oauth_refresh_tokens_expiry ON oauth_refresh_tokens (expires_at);

-- The authorization server's own login cookie: instances keep no session in memory.
CREATE TABLE oauth_login_sessions (
    session_hash  text PRIMARY KEY CHECK (session_hash ~ '^[0-9a-f]{64}$'),
    user_id       uuid NOT NULL REFERENCES users ON DELETE CASCADE,
    auth_time     timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL
);
CREATE INDEX oauth_login_sessions_expiry ON oauth_login_sessions (expires_at);

-- Failed sign-ins, for the rate limit every instance shares (per email and per client IP).
CREATE TABLE login_attempts (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email   text NOT NULL,
    ip      text NOT NULL,
    at      timestamptz NOT NULL
);
CREATE INDEX login_attempts_email ON login_attempts (email, at);
CREATE INDEX login_attempts_ip ON login_attempts (ip, at);
