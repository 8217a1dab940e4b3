"""Containers on this machine: podman or docker (``Engine``), and the services run as
containers of their image (``ContainerRun``), as a pod would run them.

The launcher runs instances this way for the image's test; the image and Kubernetes
tooling (deploy/tooling) builds, saves and loads images with the same ``Engine``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from devstack.config import REPO_ROOT

# podman's settings for this project's containers, beside the machine's own.
CONTAINERS_CONF = REPO_ROOT / "deploy" / "image" / "containers.conf"


class ImageError(RuntimeError):
    """The container engine is missing, or one of its commands (a build, a save) failed."""


@dataclass(frozen=True)
class Engine:
    """podman or docker; the same command line serves both."""

    name: str

    @classmethod
    def detect(cls) -> Engine:
        wanted = os.environ.get("SHOP_IMAGE_ENGINE", "")
        for name in [wanted] if wanted else ["podman", "docker"]:
            if shutil.which(name):
                engine = cls(name)
                # A docker client with no engine behind it (as here) is no engine.
                if engine.run("info", check=False, quiet=True).returncode == 0:
                    return engine
        raise ImageError(
            "no working container engine: install podman or docker"
            + (f" (SHOP_IMAGE_ENGINE={wanted})" if wanted else "")
        )

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.name == "podman":
            env.setdefault("CONTAINERS_CONF", str(CONTAINERS_CONF))
        return env

    def run(
        self, *args: str, check: bool = True, quiet: bool = False, capture: bool = False
    ) -> subprocess.CompletedProcess[str]:
        out = subprocess.PIPE if capture else (subprocess.DEVNULL if quiet else None)
        result = subprocess.run(
            [self.name, *args],
            env=self.env,
            stdout=out,
            stderr=subprocess.DEVNULL if quiet else None,
            text=True,
            check=False,
        )
        if check and result.returncode != 0:
            raise ImageError(f"`{self.name} {' '.join(args)}` failed (exit {result.returncode})")
        return result

    def has_image(self, ref: str) -> bool:
        return self.run("image", "inspect", ref, check=False, quiet=True).returncode == 0

    def image_id(self, ref: str) -> str:
        out = self.run("image", "inspect", "--format", "{{.Id}}", ref, capture=True).stdout
        return out.strip().removeprefix("sha256:")

    def image_size(self, ref: str) -> int:
        out = self.run("image", "inspect", ref, capture=True).stdout
        return int(json.loads(out)[0]["Size"])


@dataclass(frozen=True)
class ContainerRun:
    """Runs service instances as containers of the image, on the host's network.

    The launcher uses this in place of child processes (the image test in `make test`).
    The containers get what a Kubernetes pod gets: a read-only root, a writable /tmp,
    no capabilities, the image's non-root user, and the secrets as read-only mounts.
    """

    engine: Engine
    image: str
    # tls/ and jwt/ copied from the stack, readable by the image's user (as a Secret
    # volume with fsGroup would be): every party's certificate, for the services and
    # for the Jobs' operator; the CA's private key is not among them.
    secrets: Path

    TLS_DIR: ClassVar[str] = "/etc/shop/tls"
    JWT_DIR: ClassVar[str] = "/etc/shop/jwt"
    # The OAuth2 clients file and the client secrets (stage_oauth), as the user service's
    # and the gateway's pods mount them.
    OAUTH_DIR: ClassVar[str] = "/etc/shop/oauth"

    @classmethod
    def prepare(
        cls, engine: Engine, image: str, tls_dir: Path, jwt_dir: Path, work: Path
    ) -> ContainerRun:
        from pki.identities import IDENTITIES
        from shared.tls import ca_file, cert_file, key_file

        tls, jwt = work / "tls", work / "jwt"
        for folder in (tls, jwt):
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o755)
        files = [ca_file(tls_dir)]
        files += [f(tls_dir, name) for name in IDENTITIES for f in (cert_file, key_file)]
        for source, target in [(f, tls / f.name) for f in files] + [
            (jwt_dir / "private.pem", jwt / "private.pem")
        ]:
            shutil.copyfile(source, target)
            target.chmod(0o644)
        return cls(engine, image, work)

    @property
    def oauth_dir(self) -> Path:
        return self.secrets / "oauth"

    def stage_oauth(self, secrets_dir: Path, public_url: str) -> None:
        """The clients file and the secrets of ``secrets_dir`` copied for the containers:
        readable by the image's user, the file naming the secrets where they are mounted."""
        from ops.oauth_clients import oauth_clients, secret_file, write_clients_file

        staged = self.oauth_dir / "secrets"
        staged.mkdir(parents=True, exist_ok=True)
        for folder in (self.oauth_dir, staged):
            folder.chmod(0o755)
        clients = self.oauth_dir / "clients.json"
        write_clients_file(
            clients, public_url, secrets_dir, seen_at=Path(self.OAUTH_DIR, "secrets")
        )
        clients.chmod(0o644)
        for client in oauth_clients(public_url):
            if client.confidential:
                target = secret_file(staged, client.client_id)
                shutil.copyfile(secret_file(secrets_dir, client.client_id), target)
                target.chmod(0o644)

    def oauth_paths(self, client_id: str) -> tuple[str, str]:
        """(the clients file, ``client_id``'s secret file) inside a container."""
        return f"{self.OAUTH_DIR}/clients.json", f"{self.OAUTH_DIR}/secrets/{client_id}"

    def argv(
        self,
        name: str,
        env: Mapping[str, str],
        command: Sequence[str],
        volumes: Mapping[Path, str] | None = None,
    ) -> list[str]:
        oauth = (
            [f"--volume={self.oauth_dir}:{self.OAUTH_DIR}:ro"] if self.oauth_dir.is_dir() else []
        )
        return [
            self.engine.name,
            "run",
            "--rm",
            f"--name={name}",
            "--network=host",
            "--read-only",
            "--tmpfs=/tmp",
            "--cap-drop=all",
            "--security-opt=no-new-privileges",
            f"--volume={self.secrets / 'tls'}:{self.TLS_DIR}:ro",
            f"--volume={self.secrets / 'jwt'}:{self.JWT_DIR}:ro",
            *oauth,
            *(f"--volume={source}:{target}" for source, target in (volumes or {}).items()),
            *(f"--env={key}={value}" for key, value in sorted(env.items())),
            self.image,
            *command,
        ]

    def remove(self, name: str) -> None:
        """After a SIGKILL of `podman run` itself, its container would outlive it."""
        self.engine.run("rm", "--force", name, check=False, quiet=True)
