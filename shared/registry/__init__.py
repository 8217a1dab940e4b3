"""Service registration and discovery on etcd leases (seed ch. 1 and 2.4)."""
