CREATE TABLE users (
    user_id        uuid PRIMARY KEY,
    -- Stored normalised (trimmed, lower-case), so the plain UNIQUE is case-insensitive.
    email          text NOT NULL UNIQUE
                   CHECK (length(email) BETWEEN 3 AND 254 AND email = lower(btrim(email))
                          AND position('@' IN email) > 1),
    password_hash  text NOT NULL CHECK (password_hash LIKE '$argon2%'),
    role           text NOT NULL CHECK (role IN ('customer', 'admin')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
