"""Measurements of the system, each on a stack it starts or the `make run` one: the
performance goals and what TLS, tracing and trust cost (bench/: `make bench`,
`make bench-tls`, `make bench-observability`, `make bench-trust`), and faults under load
(chaos/: `make chaos`), which drives the load generator (loadgen/).
"""
