"""Find or install the PostgreSQL, etcd, Kafka, Zipkin and Prometheus binaries.

PostgreSQL, etcd and Prometheus come from Debian packages; Kafka and Zipkin are not packaged by
Debian and only Maven Central is reachable, so Kafka's jars are resolved from
devstack/files/kafka/pom.xml and Zipkin's self-contained server jar is downloaded, each into a
cache keyed by its version.
Every check is a few stat() calls so `install` is instant when nothing is missing.
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
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final

from devstack.config import FILES_DIR, STACK_ROOT
from devstack.process import StackError, file_lock, run

log = logging.getLogger("devstack")

KAFKA_POM = FILES_DIR / "kafka" / "pom.xml"
KAFKA_LOG4J = FILES_DIR / "kafka" / "log4j2.properties"
KAFKA_CACHE = STACK_ROOT / "kafka-libs"
ZIPKIN_VERSION: Final = "3.6.1"
ZIPKIN_CACHE = STACK_ROOT / "zipkin"
_MAVEN_CENTRAL: Final = "https://repo1.maven.org/maven2"
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


# --- Zipkin -------------------------------------------------------------------------------------


def zipkin_jar() -> Path:
    return ZIPKIN_CACHE / ZIPKIN_VERSION / f"zipkin-server-{ZIPKIN_VERSION}-exec.jar"


def _zipkin_url() -> str:
    name = zipkin_jar().name
    return f"{_MAVEN_CENTRAL}/io/zipkin/zipkin-server/{ZIPKIN_VERSION}/{name}"


def _zipkin_marker() -> Path:
    return zipkin_jar().parent / "fetched.sha1"


def zipkin_ready() -> bool:
    """The marker is written only after the checksum matched and the jar was renamed in place."""
    return _zipkin_marker().is_file() and zipkin_jar().is_file()


def _fetch_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=60) as resp:
        return str(resp.read().decode().strip())


def _download(url: str, dest: Path) -> str:
    """Stream url into dest and return its SHA-1 (what Maven Central publishes beside it)."""
    digest = hashlib.sha1(usedforsecurity=False)
    with urllib.request.urlopen(url, timeout=60) as resp, dest.open("wb") as out:
        while chunk := resp.read(1 << 20):
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def ensure_zipkin() -> Path:
    """Return the Zipkin server jar, downloading it (135 MB) from Maven Central on first use."""
    ensure_java()
    jar = zipkin_jar()
    if zipkin_ready():
        return jar
    with file_lock(ZIPKIN_CACHE / ".lock"):
        if zipkin_ready():  # another devstack (other profile) fetched it while we waited
            return jar
        url = _zipkin_url()
        log.info("zipkin: downloading %s (one-off, cached in %s)", url, jar.parent)
        started = time.monotonic()
        jar.parent.mkdir(parents=True, exist_ok=True)
        partial = jar.with_name(jar.name + ".partial")
        try:
            # The .sha1 file holds the digest, sometimes followed by the file name.
            expected = _fetch_text(url + ".sha1").split()[0].lower()
            actual = _download(url, partial)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise StackError(f"zipkin: downloading {url} failed: {exc}") from exc
        if actual != expected:
            partial.unlink(missing_ok=True)
            raise StackError(f"zipkin: {url} has SHA-1 {actual}, Maven Central says {expected}")
        partial.replace(jar)
        _zipkin_marker().write_text(actual + "\n")
        log.info(
            "zipkin: fetched %.0f MB in %.1fs",
            jar.stat().st_size / 1e6,
            time.monotonic() - started,
        )
    return jar


# --- Prometheus ---------------------------------------------------------------------------------


def find_prometheus() -> Path | None:
    """Debian's /usr/bin/prometheus; promtool comes in the same package."""
    found = shutil.which("prometheus")
    if found:
        return Path(found)
    default = Path("/usr/bin/prometheus")
    return default if default.is_file() else None


def find_promtool() -> Path | None:
    found = shutil.which("promtool")
    if found:
        return Path(found)
    default = Path("/usr/bin/promtool")
    return default if default.is_file() else None


def ensure_prometheus() -> Path:
    exe = find_prometheus()
    if exe is None or find_promtool() is None:
        # Recommends would pull in node-exporter, a system-wide daemon we do not want;
        # apt_install never installs recommends.
        apt_install("prometheus")
        exe = find_prometheus()
        if exe is None or find_promtool() is None:
            raise StackError("installed prometheus but prometheus/promtool are not on PATH")
    return exe


def ensure_promtool() -> Path:
    """promtool, which comes with Debian's prometheus package (the rules' checker)."""
    ensure_prometheus()
    exe = find_promtool()
    if exe is None:
        raise StackError("installed prometheus but promtool is not on PATH")
    return exe


# --- Chromium (the browser check of `make test`) -------------------------------------------------


def find_chromium() -> Path | None:
    for name in ("chromium", "chromium-browser"):
        if found := shutil.which(name):
            return Path(found)
    return None


def ensure_chromium() -> Path:
    """Debian's Chromium, for the headless screenshots of the trace UI and Prometheus; not
    part of ``ensure_all``: `make run` has no use for it."""
    exe = find_chromium()
    if exe is None:
        apt_install("chromium")
        exe = find_chromium()
        if exe is None:
            raise StackError("installed chromium but it is not on PATH")
    return exe


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
    if find_prometheus() is None or find_promtool() is None:
        missing.append("prometheus")
    if missing:
        apt_install(*missing)
    ensure_postgres()
    ensure_etcd()
    ensure_prometheus()
    # Both are network-bound one-offs (Maven resolving ~100 jars, a 135 MB download): overlap them.
    with ThreadPoolExecutor(2, thread_name_prefix="devstack-fetch") as pool:
        fetches = [pool.submit(ensure_kafka), pool.submit(ensure_zipkin)]
    for fetch in fetches:
        fetch.result()
