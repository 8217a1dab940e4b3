"""Find or install the PostgreSQL, etcd and Kafka binaries.

PostgreSQL and etcd come from Debian packages; Kafka is not packaged by Debian and only Maven
Central is reachable, so its jars are resolved from infra/kafka/pom.xml into a cache keyed by the
Kafka version. Every check is a few stat() calls so `install` is instant when nothing is missing.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from devstack.config import INFRA_DIR, STACK_ROOT
from devstack.process import StackError, file_lock, run

log = logging.getLogger("devstack")

KAFKA_POM = INFRA_DIR / "kafka" / "pom.xml"
KAFKA_LOG4J = INFRA_DIR / "kafka" / "log4j2.properties"
KAFKA_CACHE = STACK_ROOT / "kafka-libs"
_POLICY_RC = Path("/usr/sbin/policy-rc.d")
# apt/dpkg hold a global lock anyway; this just keeps our own threads from queueing on it noisily.
_apt_mutex = threading.Lock()


# --- PostgreSQL ---------------------------------------------------------------------------------


def _pg_version(bindir: Path) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", bindir.parent.name)) or (0,)


def find_pg_bindir() -> Path | None:
    candidates = [
        d
        for d in Path("/usr/lib/postgresql").glob("*/bin")
        if all((d / exe).is_file() for exe in ("pg_ctl", "initdb", "postgres"))
    ]
    return max(candidates, key=_pg_version, default=None)


def ensure_postgres() -> Path:
    bindir = find_pg_bindir()
    if bindir is None:
        apt_install("postgresql")
        bindir = find_pg_bindir()
        if bindir is None:
            raise StackError(
                "installed postgresql but found no server binaries under /usr/lib/postgresql"
            )
    return bindir


# --- etcd ---------------------------------------------------------------------------------------


def find_etcd() -> Path | None:
    found = shutil.which("etcd")
    if found:
        return Path(found)
    default = Path("/usr/bin/etcd")
    return default if default.is_file() else None


def ensure_etcd() -> Path:
    exe = find_etcd()
    if exe is None:
        apt_install("etcd-server")
        exe = find_etcd()
        if exe is None:
            raise StackError("installed etcd-server but no etcd binary is on PATH")
    return exe


# --- Kafka --------------------------------------------------------------------------------------


def kafka_version() -> str:
    match = re.search(r"<kafka\.version>\s*([^<\s]+)\s*</kafka\.version>", KAFKA_POM.read_text())
    if not match:
        raise StackError(f"no <kafka.version> property in {KAFKA_POM}")
    return match.group(1)


def kafka_libs_dir() -> Path:
    return KAFKA_CACHE / kafka_version() / "libs"


def _pom_digest() -> str:
    return hashlib.sha256(KAFKA_POM.read_bytes()).hexdigest()


def _kafka_marker(libs: Path) -> Path:
    return libs.parent / "fetched.sha256"


def kafka_libs_ready() -> bool:
    """The marker is written last and records the pom it came from, so an interrupted fetch or
    an edited pom (same version, different deps) both count as not ready."""
    libs = kafka_libs_dir()
    marker = _kafka_marker(libs)
    return marker.is_file() and marker.read_text().strip() == _pom_digest()


def find_java() -> Path | None:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return Path(home) / "bin" / "java"
    found = shutil.which("java")
    return Path(found) if found else None


def ensure_java() -> Path:
    java = find_java()
    if java is None:
        apt_install("default-jre-headless")
        java = find_java()
        if java is None:
            raise StackError("installed default-jre-headless but no java on PATH")
    return java


def ensure_kafka() -> Path:
    """Return the directory of Kafka runtime jars, fetching them with Maven on first use."""
    ensure_java()
    libs = kafka_libs_dir()
    if kafka_libs_ready():
        return libs
    with file_lock(KAFKA_CACHE / ".lock"):
        if kafka_libs_ready():  # another devstack (other profile) fetched it while we waited
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            apt_install("maven")
            mvn = shutil.which("mvn")
            if mvn is None:
                raise StackError("installed maven but no mvn on PATH")
        version = kafka_version()
        log.info("kafka: fetching Kafka %s jars with Maven (one-off, cached in %s)", version, libs)
        started = time.monotonic()
        partial = libs.with_name("libs.partial")
        shutil.rmtree(partial, ignore_errors=True)
        run(
            [
                mvn, "-B", "-q", "-f", str(KAFKA_POM),
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={partial}",
            ],
            what="fetching Kafka jars with Maven",
            cwd=KAFKA_POM.parent,
            timeout=1800,
        )  # fmt: skip
        if not list(partial.glob("kafka_2.13-*.jar")):
            raise StackError(f"Maven finished but {partial} holds no kafka_2.13 jar")
        shutil.rmtree(libs, ignore_errors=True)
        partial.rename(libs)
        _kafka_marker(libs).write_text(_pom_digest() + "\n")
        log.info(
            "kafka: fetched %d jars in %.1fs",
            len(list(libs.glob("*.jar"))),
            time.monotonic() - started,
        )
    return libs


# --- apt ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def _no_service_autostart() -> Iterator[None]:
    """Keep the package's own service (default ports, distro config) from being started.

    policy-rc.d exit 101 is Debian's documented "don't start services" switch; we only add one for
    the duration of the install and never touch an existing one.
    """
    if _POLICY_RC.exists():
        yield
        return
    _POLICY_RC.write_text(
        "#!/bin/sh\n# temporary, written by devstack during apt-get install\nexit 101\n"
    )
    _POLICY_RC.chmod(0o755)
    try:
        yield
    finally:
        _POLICY_RC.unlink(missing_ok=True)


def apt_install(*packages: str) -> None:
    if os.geteuid() != 0:
        raise StackError(
            f"need {' '.join(packages)}; as root run: apt-get install {' '.join(packages)}"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with _apt_mutex, _no_service_autostart():
        log.info("installing %s with apt-get (one-off)", " ".join(packages))
        started = time.monotonic()
        run(["apt-get", "update", "-q"], what="apt-get update", env=env, timeout=600)
        run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
            what=f"apt-get install {' '.join(packages)}",
            env=env,
            timeout=1200,
        )
        log.info("installed %s in %.1fs", " ".join(packages), time.monotonic() - started)


def ensure_all() -> None:
    """Install everything, batching the apt packages so apt-get update runs at most once."""
    missing = []
    if find_pg_bindir() is None:
        missing.append("postgresql")
    if find_etcd() is None:
        missing.append("etcd-server")
    if find_java() is None:
        missing.append("default-jre-headless")
    if not kafka_libs_ready() and shutil.which("mvn") is None:
        missing.append("maven")
    if missing:
        apt_install(*missing)
    ensure_postgres()
    ensure_etcd()
    ensure_kafka()
