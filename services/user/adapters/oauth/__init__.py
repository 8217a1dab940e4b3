"""The OAuth2 / OpenID Connect authorization server: an inbound HTTPS adapter of the user
service (it owns the accounts, the password hashes and the signing keys), built on aioauth.
See docs/security.md, "The authorization server"."""
