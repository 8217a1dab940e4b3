"""The load generator: open-loop scenarios, a same-run baseline, the audit, a report.

`make load PROFILE=<name>` runs it against the `make run` system (``python -m loadgen``),
`make load-k8s` as a Job in the cluster (``--target env``, its own image); the e2e tests
and the chaos runner call :func:`loadgen.runner.run_scenarios` and its parts directly.
See the README's "Load tests" section.
"""
