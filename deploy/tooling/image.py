"""`make image`: the one OCI image of the five services, built with podman or docker.

``python -m deploy.tooling.image build`` builds ``deploy/image/Containerfile`` from the repo
root and prints the image's name and size. The base is the public
``python:3.11-slim-bookworm`` where a registry is reachable; otherwise (as on the
machine this project is developed on) an equivalent bookworm base is built from
Debian's packages with mmdebstrap and imported as ``localhost/shop-base``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from devstack.containers import Engine, ImageError

REPO_ROOT = Path(__file__).resolve().parents[2]
CONTAINERFILE = REPO_ROOT / "deploy" / "image" / "Containerfile"
PUBLIC_BASE = "docker.io/library/python:3.11-slim-bookworm"
LOCAL_BASE = "localhost/shop-base:bookworm"
IMAGE = "localhost/shop"
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


def build(engine: Engine, base: str | None = None, tag: str = "dev") -> str:
    """Builds the image; returns ``localhost/shop:<tag>``, also tagged by its content id.

    The content tag (the image id's first 12 hex digits) is what `make up` deploys:
    a rebuild with no change keeps it, so repeating `make up` restarts nothing.
    """
    chosen = choose_base(engine, base)
    ref = f"{IMAGE}:{tag}"
    # The builder fetches the locked wheels from PyPI, trusting what this host trusts.
    ca_bundle = Path(os.environ.get("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt"))
    secret = ["--secret", f"id=host-ca,src={ca_bundle}"] if ca_bundle.is_file() else []
    engine.run(
        "build",
        "--network=host",
        *secret,
        "--build-arg",
        f"BASE_IMAGE={chosen}",
        "--file",
        str(CONTAINERFILE),
        "--tag",
        ref,
        str(REPO_ROOT),
    )
    engine.run("tag", ref, content_ref(engine, ref))
    return ref


def content_ref(engine: Engine, ref: str) -> str:
    return f"{IMAGE}:{engine.image_id(ref)[:12]}"


app = typer.Typer(add_completion=False, help=__doc__)


@app.callback()
def main() -> None:
    """The project's container image."""


@app.command("build")
def build_command(
    base: Annotated[
        str | None, typer.Option(envvar="BASE_IMAGE", help=f"base image (default {PUBLIC_BASE})")
    ] = None,
    tag: Annotated[str, typer.Option(help="tag of localhost/shop")] = "dev",
) -> None:
    """Build localhost/shop:<tag> and print its size."""
    try:
        engine = Engine.detect()
        ref = build(engine, base or None, tag)
        size = engine.image_size(ref)
    except (ImageError, subprocess.CalledProcessError) as error:
        raise SystemExit(f"image: {error}") from None
    tagged = content_ref(engine, ref)
    print(f"image: {ref} ({tagged}) · {size / 1e6:.0f} MB · built by {engine.name}")


if __name__ == "__main__":
    app()
