"""The end-to-end load harness: open-loop scenarios, a same-run baseline, a report.

`make load PROFILE=<name>` runs it against the `make run` system; the tests
call :func:`run_scenarios` directly. See docs/load-tests.md.
"""
