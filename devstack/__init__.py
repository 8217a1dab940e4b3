"""Local PostgreSQL + etcd + Kafka (+ Zipkin, Prometheus) stack for the shop services.

No Docker on the dev/CI machines, so the daemons run as plain detached processes whose state
lives under ``<repo>/.stack/<profile>/`` (profiles ``dev`` and ``test`` differ in ports and data
dir, so ``make test`` never touches a ``make run`` stack). CLI: ``python -m devstack --help``.
Python: ``devstack.stack.Stack("test").up()``; topic names: ``devstack.topics``.
"""
