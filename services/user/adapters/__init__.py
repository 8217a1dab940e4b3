"""What only the user service talks to: the signing keyring (its table and etcd's JWKS), the
first admin's command line, and the OAuth2 / OpenID Connect authorization server (oauth/)."""
