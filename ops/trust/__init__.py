"""Who may do what below the gRPC ports: etcd roles, Kafka ACLs and PostgreSQL roles.

``rights`` is the table; the other modules apply it to a running etcd, Kafka or
PostgreSQL, the same way for a local stack (devstack) and for Kubernetes (its Jobs
run ``python -m ops.trust``).
"""
