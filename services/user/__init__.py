"""user: accounts, credentials (argon2 hashes), roles, and the access tokens it signs."""
