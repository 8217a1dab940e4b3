"""Stand-ins for the infrastructure images the manifests name, built here, under their names.

No container registry is reachable from this machine or its CI, so a real kubelet cannot pull
``postgres:15`` and the rest. ``python -m deploy.tooling.real_check.images build --out DIR`` builds
one image per official name from ``deploy/k8s/real-check/images/<folder>`` (Debian packages,
Maven Central jars, Go module proxy builds, our own scripts) and writes each as a
docker-archive tar that keeps the official name, for ``ctr -n k8s.io images import``. What each
official image declares and how its stand-in matches it: ``deploy/k8s/real-check/images/README.md``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from deploy.tooling.image import MMDEBSTRAP_ARGS
from devstack.containers import Engine, ImageError

REPO_ROOT = Path(__file__).resolve().parents[3]
REAL_CHECK = REPO_ROOT / "deploy" / "k8s" / "real-check"
IMAGES_DIR = REAL_CHECK / "images"
GO_DIR = REAL_CHECK / "go"
# Build products (Go binaries, jars, contexts) stay out of the repository.
WORK = REPO_ROOT / ".stack" / "real-check"
BIN = WORK / "bin"
DIGEST_LABEL = "shop.real-check.inputs"
BASE = "localhost/real-check/bookworm:base"
JRE = "localhost/real-check/jre:17"
# deploy/tooling/image.py's base (docs, manuals and translations left out) plus what the stand-ins'
# Containerfiles use from it: CA roots for the scratch images, useradd for the users.
BASE_ARGS = (
    *(arg for arg in MMDEBSTRAP_ARGS if not arg.startswith("--include=") and arg != "bookworm"),
    "--include=ca-certificates,passwd",
    "bookworm",
)
STATIC_GO = {**os.environ, "CGO_ENABLED": "0"}


def _run(*argv: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
    result = subprocess.run(argv, cwd=cwd, env=env, check=False)
    if result.returncode != 0:
        raise ImageError(f"`{' '.join(argv)}` failed (exit {result.returncode})")


def _go_build(module: str, target: str, out: str, *flags: str, ldflags: str = "") -> Path:
    # -trimpath: the same sources give the same binary, so an unchanged build keeps its digest.
    binary = BIN / out
    BIN.mkdir(parents=True, exist_ok=True)
    _run(
        "go", "build", *flags, "-trimpath", "-buildvcs=false", f"-ldflags=-s -w {ldflags}",
        "-o", str(binary), target, cwd=GO_DIR / module, env=STATIC_GO,
    )  # fmt: skip
    return binary


def _stage_pause(ctx: Path) -> None:
    BIN.mkdir(parents=True, exist_ok=True)
    _run("gcc", "-static", "-Os", "-s", "-Wall", "-o", str(BIN / "pause"), str(ctx / "pause.c"))
    shutil.copy2(BIN / "pause", ctx / "pause")


def _stage_etcd(ctx: Path) -> None:
    _go_build("etcd", ".", "etcd")
    _go_build("etcd", "go.etcd.io/etcd/etcdctl/v3", "etcdctl")
    _go_build("etcd", "go.etcd.io/etcd/etcdutl/v3", "etcdutl")
    for name in ("etcd", "etcdctl", "etcdutl"):
        shutil.copy2(BIN / name, ctx / name)


def _stage_coredns(ctx: Path) -> None:
    shutil.copy2(_go_build("coredns", "github.com/coredns/coredns", "coredns"), ctx / "coredns")
    # As the official image: uid 65532 may bind port 53 with no capability granted to the pod.
    _run("setcap", "cap_net_bind_service=+ep", str(ctx / "coredns"))


def _stage_prometheus(ctx: Path) -> None:
    module = GO_DIR / "prometheus"
    found = re.search(
        r"github.com/prometheus/prometheus v0\.(\d+)\.(\d+)", (module / "go.mod").read_text()
    )
    if not found:
        raise ImageError(f"no github.com/prometheus/prometheus v0.x requirement in {module}")
    version = f"-X github.com/prometheus/common/version.Version=2.{found[1]}.{found[2]}"
    for command in ("prometheus", "promtool"):
        target = f"github.com/prometheus/prometheus/cmd/{command}"
        shutil.copy2(_go_build("prometheus", target, command, ldflags=version), ctx)


def _stage_kafka(ctx: Path) -> None:
    pom = ctx / "pom.xml"
    libs = WORK / "kafka-libs"
    marker = WORK / "kafka-libs.sha256"
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    if not (marker.is_file() and marker.read_text().strip() == digest):
        partial = WORK / "kafka-libs.partial"
        shutil.rmtree(partial, ignore_errors=True)
        _run(
            "mvn", "-B", "-q", "-f", str(pom), "dependency:copy-dependencies",
            "-DincludeScope=runtime", f"-DoutputDirectory={partial}",
        )  # fmt: skip
        shutil.rmtree(libs, ignore_errors=True)
        partial.rename(libs)
        marker.write_text(digest + "\n")
    _link_tree(libs, ctx / "libs")


def _stage_zipkin(ctx: Path) -> None:
    from devstack.install import ZIPKIN_VERSION, ensure_zipkin

    unpacked = WORK / f"zipkin-{ZIPKIN_VERSION}"
    if not (unpacked / "BOOT-INF").is_dir():
        # The official image runs the exec jar unpacked (start-zipkin: `-cp .` in /zipkin).
        partial = unpacked.with_name(unpacked.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        with zipfile.ZipFile(ensure_zipkin()) as jar:
            jar.extractall(partial)
        partial.rename(unpacked)
    _link_tree(unpacked, ctx / "zipkin")


def _link_tree(source: Path, target: Path) -> None:
    """Hard links: the jars are hundreds of MB, and the context is thrown away after."""

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link)


def _no_inputs(ctx: Path) -> None:
    del ctx


@dataclass(frozen=True)
class StandIn:
    name: str
    folder: str
    stage: Callable[[Path], None] = _no_inputs
    bases: tuple[str, ...] = (BASE,)

    @property
    def archive(self) -> str:
        repo, tag = self.name.rsplit(":", 1)
        return f"{repo.rsplit('/', 1)[-1]}-{tag}.tar"


IMAGES = (
    StandIn("docker.io/library/postgres:15", "postgres"),
    StandIn("docker.io/apache/kafka:4.1.1", "kafka", _stage_kafka, (BASE, JRE)),
    StandIn("quay.io/coreos/etcd:v3.5.21", "etcd", _stage_etcd),
    StandIn("docker.io/prom/prometheus:v2.53.5", "prometheus", _stage_prometheus),
    StandIn("docker.io/openzipkin/zipkin:3.6.1", "zipkin", _stage_zipkin, (BASE, JRE)),
    StandIn("registry.k8s.io/pause:3.10", "pause", _stage_pause, ()),
    StandIn("registry.k8s.io/coredns/coredns:v1.12.1", "coredns", _stage_coredns),
)
STAND_INS = [image.name for image in IMAGES]
JRE_IMAGE = StandIn(JRE, "base-jre")


def _digest(ctx: Path, extra: Sequence[str]) -> str:
    """Of every file's path, mode and bytes in the context, and of the bases' ids."""
    digest = hashlib.sha256()
    for item in extra:
        digest.update(item.encode() + b"\0")
    for path in sorted(p for p in ctx.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(ctx)}\0{path.stat().st_mode:o}\0".encode())
        with path.open("rb") as data:
            while chunk := data.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def _label(engine: Engine, ref: str) -> str | None:
    if not engine.has_image(ref):
        return None
    out = engine.run("image", "inspect", "--format", "json", ref, capture=True).stdout
    labels = json.loads(out)[0].get("Labels") or {}
    return str(labels.get(DIGEST_LABEL, "")) or None


def _archive_label(archive: Path) -> str | None:
    """The digest label in a saved docker-archive's image config, if it is one."""
    try:
        with tarfile.open(archive) as tar:
            manifest = _json_member(tar, "manifest.json")
            config = _json_member(tar, manifest[0]["Config"])
            labels = config.get("config", {}).get("Labels") or {}
    except (OSError, KeyError, IndexError, TypeError, ValueError, tarfile.TarError):
        return None
    label = labels.get(DIGEST_LABEL)
    return str(label) if label else None


def _json_member(tar: tarfile.TarFile, name: str) -> Any:
    member = tar.extractfile(name)
    if member is None:
        raise KeyError(name)
    return json.loads(member.read())


def ensure_base(engine: Engine) -> bool:
    """The mmdebstrap'ed bookworm every Debian-based stand-in starts from (one per machine)."""
    digest = hashlib.sha256("\0".join(BASE_ARGS).encode()).hexdigest()
    if _label(engine, BASE) == digest:
        return False
    with tempfile.TemporaryDirectory(prefix="real-check-base-") as tmp:
        tarball = Path(tmp) / "base.tar"
        _run("mmdebstrap", "--quiet", *BASE_ARGS, str(tarball))
        engine.run("import", "--change", f"LABEL {DIGEST_LABEL}={digest}", str(tarball), BASE)
    return True


def build_image(engine: Engine, image: StandIn, base_ids: Sequence[str]) -> bool:
    """Builds ``image`` unless an image of that name was built from the same inputs."""
    ctx = WORK / "context" / image.folder
    shutil.rmtree(ctx, ignore_errors=True)
    ctx.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(IMAGES_DIR / image.folder, ctx)
    if (ctx / "rootfs").is_dir():
        # A scratch image's /tmp: git keeps neither empty folders nor their modes.
        (ctx / "rootfs" / "tmp").mkdir(exist_ok=True)
        (ctx / "rootfs" / "tmp").chmod(0o1777)
    image.stage(ctx)
    digest = _digest(ctx, base_ids)
    if _label(engine, image.name) == digest:
        return False
    engine.run(
        "build", "--format=docker", "--network=host", "--pull=never",
        f"--label={DIGEST_LABEL}={digest}", f"--tag={image.name}",
        f"--file={ctx / 'Containerfile'}", str(ctx),
    )  # fmt: skip
    return True


def save(engine: Engine, image: StandIn, out: Path) -> Path:
    """The docker-archive of ``image``, rewritten only when the image changed."""
    archive = out / image.archive
    if archive.is_file() and _archive_label(archive) == _label(engine, image.name):
        return archive
    partial = archive.with_name(archive.name + ".partial")
    partial.unlink(missing_ok=True)
    engine.run("save", "--format=docker-archive", f"--output={partial}", image.name)
    partial.replace(archive)
    return archive


def _selected(only: Sequence[str]) -> list[StandIn]:
    if not only:
        return list(IMAGES)
    chosen = [i for i in IMAGES if i.name in only or i.folder in only]
    unknown = set(only) - {i.name for i in chosen} - {i.folder for i in chosen}
    if unknown:
        raise ImageError(f"no stand-in {', '.join(sorted(unknown))}; there are: {STAND_INS}")
    return chosen


def build_all(out: Path, only: Sequence[str] = ()) -> list[Path]:
    """Builds the stand-ins (all, or those named by official name or folder) into ``out``."""
    engine = Engine.detect()
    chosen = _selected(only)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    ids: dict[str, str] = {}
    if any(BASE in image.bases for image in chosen):
        built = ensure_base(engine)
        ids[BASE] = engine.image_id(BASE)
        _report(BASE, None, started, built)
    if any(JRE in image.bases for image in chosen):
        began = time.monotonic()
        built = build_image(engine, JRE_IMAGE, [ids[BASE]])
        ids[JRE] = engine.image_id(JRE)
        _report(JRE, None, began, built)
    archives = []
    for image in chosen:
        began = time.monotonic()
        built = build_image(engine, image, [ids[base] for base in image.bases])
        archives.append(save(engine, image, out))
        _report(image.name, archives[-1], began, built)
    print(f"stand-ins: {len(archives)} in {out} after {time.monotonic() - started:.0f} s")
    return archives


def _report(name: str, archive: Path | None, began: float, built: bool) -> None:
    size = f"{archive.stat().st_size / 1e6:7.1f} MB" if archive else " " * 10
    state = "built" if built else "unchanged"
    print(f"{name:45} {size} {time.monotonic() - began:6.1f} s  {state}", flush=True)


app = typer.Typer(add_completion=False, help=__doc__)


@app.callback()
def main() -> None:
    """Stand-in images for a registry-less kubelet."""


@app.command("build")
def build_command(
    out: Annotated[Path, typer.Option(help="folder for the docker-archive tars")],
    only: Annotated[
        list[str] | None, typer.Option(help="official name or folder (repeatable)")
    ] = None,
) -> None:
    """Build every stand-in (or --only some) and save each as OUT/<name>-<tag>.tar."""
    try:
        build_all(out, only or ())
    except (ImageError, subprocess.CalledProcessError) as error:
        raise SystemExit(f"stand-ins: {error}") from None


if __name__ == "__main__":
    app()
