"""What only the user service talks to: the signing keyring (its table and etcd's JWKS) and the
first admin's command line."""
