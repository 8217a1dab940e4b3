"""`make image`: the OCI images, built with podman or docker, each carrying what it runs.

``python -m deploy.tooling.image build`` builds the stages of ``deploy/image/Containerfile``
from the repo root, one image each, and prints their names and sizes: the five services'
(``localhost/shop``), the operator's tools for the Jobs and the shopctl pod
(``localhost/shop-ops``) and the load generator's (``localhost/shop-loadgen``). The base
is the public ``python:3.11-slim-bookworm`` where a registry is reachable; otherwise (as
on the machine this project is developed on) an equivalent bookworm base is built from
Debian's packages with mmdebstrap and imported as ``localhost/shop-base``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import typer

from devstack.containers import Engine, ImageError

REPO_ROOT = Path(__file__).resolve().parents[2]
CONTAINERFILE = REPO_ROOT / "deploy" / "image" / "Containerfile"
PUBLIC_BASE = "docker.io/library/python:3.11-slim-bookworm"
LOCAL_BASE = "localhost/shop-base:bookworm"
IMAGE = "localhost/shop"
OPS_IMAGE = "localhost/shop-ops"
LOADGEN_IMAGE = "localhost/shop-loadgen"
# Each image and the Containerfile stage it is; the services' is the file's default (last).
STAGES = {IMAGE: "services", OPS_IMAGE: "ops", LOADGEN_IMAGE: "loadgen"}
# What the public slim image has that matters to us: Python 3.11 with venv, CA roots.
# The docs, manuals and translations are left out, as the slim image leaves them out.
MMDEBSTRAP_ARGS = (
    "--variant=apt",
    "--include=python3,python3-venv,ca-certificates",
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    "--dpkgopt=path-exclude=/usr/share/info/*",
    "--customize-hook=rm -rf $1/var/lib/apt/lists/* $1/var/cache/apt/*",
    "bookworm",
)


def build_local_base(engine: Engine) -> None:
    """A Debian bookworm base with Python 3.11, from Debian's packages (about 20 s)."""
    if not shutil.which("mmdebstrap"):
        raise ImageError("no registry for the public base, and no mmdebstrap to build one")
    with tempfile.TemporaryDirectory(prefix="shop-base-") as tmp:
        tarball = Path(tmp) / "base.tar"
        subprocess.run(["mmdebstrap", "--quiet", *MMDEBSTRAP_ARGS, str(tarball)], check=True)
        engine.run("import", "--change", 'CMD ["python3"]', str(tarball), LOCAL_BASE)


def choose_base(engine: Engine, requested: str | None) -> str:
    """The requested base, else the public one if it is here or can be pulled, else our own."""
    if requested:
        if requested == LOCAL_BASE and not engine.has_image(LOCAL_BASE):
            build_local_base(engine)
        return requested
    if (
        engine.has_image(PUBLIC_BASE)
        or engine.run("pull", "--quiet", PUBLIC_BASE, check=False, quiet=True).returncode == 0
    ):
        return PUBLIC_BASE
    if not engine.has_image(LOCAL_BASE):
        print(f"image: {PUBLIC_BASE} cannot be pulled here; building {LOCAL_BASE} (mmdebstrap)")
        build_local_base(engine)
    return LOCAL_BASE


def build(engine: Engine, base: str | None = None, tag: str = "dev") -> dict[str, str]:
    """Builds every image; returns image -> ``<image>:<tag>``, each also tagged by its
    content id.

    The content tag (the image id's first 12 hex digits) is what `make up` deploys:
    a rebuild with no change keeps it, so repeating `make up` restarts nothing.
    """
    chosen = choose_base(engine, base)
    # The builder fetches the locked wheels from PyPI, trusting what this host trusts.
    ca_bundle = Path(os.environ.get("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt"))
    secret = ["--secret", f"id=host-ca,src={ca_bundle}"] if ca_bundle.is_file() else []
    refs = {}
    for image, stage in STAGES.items():
        ref = f"{image}:{tag}"
        engine.run(
            "build",
            "--network=host",
            *secret,
            "--build-arg",
            f"BASE_IMAGE={chosen}",
            "--file",
            str(CONTAINERFILE),
            "--target",
            stage,
            "--tag",
            ref,
            str(REPO_ROOT),
        )
        engine.run("tag", ref, content_ref(engine, ref))
        refs[image] = ref
    return refs


def content_ref(engine: Engine, ref: str) -> str:
    """``<image>:<content id>`` of the image ``ref`` names."""
    return f"{ref.rpartition(':')[0]}:{engine.image_id(ref)[:12]}"


def content_tags(engine: Engine, refs: Mapping[str, str]) -> dict[str, str]:
    """image -> its content tag, for refs as ``build`` returns them."""
    return {image: content_ref(engine, ref).rpartition(":")[2] for image, ref in refs.items()}


app = typer.Typer(add_completion=False, help=__doc__)


@app.callback()
def main() -> None:
    """The project's container images."""


@app.command("build")
def build_command(
    base: Annotated[
        str | None, typer.Option(envvar="BASE_IMAGE", help=f"base image (default {PUBLIC_BASE})")
    ] = None,
    tag: Annotated[str, typer.Option(help="tag of each image")] = "dev",
) -> None:
    """Build localhost/shop, shop-ops and shop-loadgen at <tag>; print their sizes."""
    try:
        engine = Engine.detect()
        refs = build(engine, base or None, tag)
        sizes = {ref: engine.image_size(ref) for ref in refs.values()}
        tagged = {ref: content_ref(engine, ref) for ref in refs.values()}
    except (ImageError, subprocess.CalledProcessError) as error:
        raise SystemExit(f"image: {error}") from None
    for ref, size in sizes.items():
        print(f"image: {ref} ({tagged[ref]}) · {size / 1e6:.0f} MB · built by {engine.name}")


if __name__ == "__main__":
    app()
