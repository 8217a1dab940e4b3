"""The demos: each shows one behaviour of the system against `make run` and says in one
line whether it showed (`make demo-trace`, `demo-config`, `demo-oversell`, `demo-retry`,
`demo-breaker`, `demo-ratelimit`). session.py is what they share; legacy_monolith.py is
the design before the oversell fix, which only the oversell demo runs.
"""
