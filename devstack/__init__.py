"""Local PostgreSQL + etcd + Kafka (+ Zipkin, Prometheus) stack for the shop services, and the
whole system run on it.

No Docker on the dev/CI machines, so the daemons run as plain detached processes whose state
lives under ``<repo>/.stack/<profile>/`` (profiles ``dev`` and ``test`` differ in ports and data
dir, so ``make test`` never touches a ``make run`` stack). CLI: ``python -m devstack --help``.
Python: ``devstack.stack.Stack("test").up()``; topic names: ``devstack.topics``.

On top of the stack: ``run.py`` is `make run` (the five services started and supervised by
``launcher.py``, the config defaults and demo data written through ops/); the commands that
take ``--profile`` work on one local stack: ``certs``, ``audit``, ``attack``.
"""
