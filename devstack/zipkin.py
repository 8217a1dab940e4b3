"""Zipkin: the trace backend, one in-memory server per profile, run from its exec jar."""

from __future__ import annotations

import json
import os
from pathlib import Path

from devstack.component import Component
from devstack.config import HOST
from devstack.install import ensure_java, ensure_zipkin, find_java, zipkin_jar
from devstack.process import StackError, http_get, spawn_detached

# A dev stack keeps traces for a while, not forever: bounded heap, bounded span count (Zipkin
# evicts the oldest traces past MEM_MAX_SPANS; about 1 KB a span, so 200k spans fit in 384 MB).
# Startup dominates a dev JVM's life and the load is light: skip the optimising JIT, use the
# cheapest collector.
_JVM = [
    "-Xms64m",
    "-Xmx384m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
]
_MAX_SPANS = 200_000
# Only these reach the JVM: Zipkin binds dozens of variables (KAFKA_BOOTSTRAP_SERVERS, ES_HOSTS,
# RABBIT_URI, ...) that, inherited from the caller's shell, would switch on collectors or storage.
_PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "JAVA_HOME")


class Zipkin(Component):
    name = "zipkin"
    binary_hint = "zipkin-server-"
    stop_timeout = 20.0
    start_timeout = 90.0

    @property
    def ports(self) -> tuple[int, ...]:
        return (self.profile.ports.zipkin,)

    @property
    def home(self) -> Path:
        return self.profile.dir / "zipkin"

    @property
    def ui_url(self) -> str:
        return f"http://{HOST}:{self.port}/zipkin/"

    @property
    def spans_url(self) -> str:
        """Where tracers POST spans (Zipkin JSON v2)."""
        return f"http://{HOST}:{self.port}/api/v2/spans"

    def install(self) -> None:
        ensure_java()
        ensure_zipkin()

    def prepare(self) -> None:
        # Nothing persists (in-memory storage); the dir is the JVM's tmpdir and cwd.
        (self.home / "tmp").mkdir(parents=True, exist_ok=True)

    def launch(self) -> int:
        java = find_java()
        if java is None:
            raise StackError("java not found; run `python -m devstack install`")
        argv = [
            str(java),
            *_JVM,
            # Also puts the profile dir on the command line, which is how pid() tells ours apart.
            f"-Djava.io.tmpdir={self.home / 'tmp'}",
            "-jar",
            str(zipkin_jar()),
            # Zipkin documents no listen-address variable (QUERY_PORT sets the port only), but
            # its server is Armeria's, configured from the `armeria.ports` list: replacing that
            # list (a command-line entry replaces it whole) binds loopback only.
            f"--armeria.ports[0].port={self.port}",
            f"--armeria.ports[0].ip={HOST}",
            "--armeria.ports[0].protocols[0]=http",
        ]
        env = {k: v for k, v in os.environ.items() if k in _PASSED_ENV}
        env.update(
            STORAGE_TYPE="mem",
            MEM_MAX_SPANS=str(_MAX_SPANS),
            QUERY_PORT=str(self.port),
            SELF_TRACING_ENABLED="false",
        )
        return spawn_detached(argv, self.log_file, cwd=self.home, env=env)

    def probe(self) -> bool:
        """GET /health: 200 and status UP once the HTTP server and the storage are ready."""
        answer = http_get(HOST, self.port, "/health")
        try:
            return (
                answer is not None
                and answer[0] == 200
                and (json.loads(answer[1]).get("status") == "UP")
            )
        except ValueError:
            return False
