"""The project's public-key infrastructure: its CA, and the certificates it issues to every
party. Tooling and the local stacks use it; the services only read what it wrote
(shared/tls.py)."""
