"""The storefront: server-rendered pages (Jinja2 + htmx) on the gateway's backends,
with the tokens kept on the server behind an HttpOnly cookie (the BFF pattern)."""
