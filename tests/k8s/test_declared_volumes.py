"""The pods' mounts against the VOLUMEs the official images declare.

A container runtime (containerd's CRI, Docker) gives every declared VOLUME path that no
pod mount covers exactly an anonymous volume of its own, per container, owned as the
image's directory is. A mount on a parent of that path does not cover it: the anonymous
volume is mounted inside it (inside a read-only one it cannot even be created), the data
written there goes nowhere the next container or the PersistentVolume sees, and a uid
other than the image's cannot write it. So every declared path must be a mount of its own.

The declarations are read from deploy/k8s/real-check/images/declared.toml, the table
taken from the images' Dockerfiles.
"""

from __future__ import annotations

import tomllib
from functools import cache
from pathlib import PurePosixPath
from typing import Any

import pytest

from deploy.tooling.k8s_check import K8S_DIR, OVERLAYS, objects, rendered

DECLARED_TOML = K8S_DIR / "real-check" / "images" / "declared.toml"
Obj = dict[str, Any]


@cache
def declared() -> dict[str, Obj]:
    with DECLARED_TOML.open("rb") as f:
        return tomllib.load(f)


@cache
def overlay(name: str) -> tuple[Obj, ...]:
    return tuple(objects(rendered()[name]))


def pod_specs(objs: tuple[Obj, ...]) -> list[tuple[str, Obj]]:
    specs = []
    for o in objs:
        if o["kind"] in ("Deployment", "StatefulSet", "Job", "DaemonSet"):
            specs.append((f"{o['kind']}/{o['metadata']['name']}", o["spec"]["template"]["spec"]))
        elif o["kind"] == "Pod":
            specs.append((f"Pod/{o['metadata']['name']}", o["spec"]))
    return specs


def inside(path: str, parent: str) -> bool:
    """True when `path` lies strictly beneath `parent`."""
    p, q = PurePosixPath(path), PurePosixPath(parent)
    return p != q and q in p.parents


def mount_violations(container: Obj, volumes: list[str]) -> list[str]:
    mounts = container.get("volumeMounts", [])
    paths = {str(PurePosixPath(m["mountPath"])) for m in mounts}
    found = []
    for declared_path in volumes:
        if declared_path not in paths:
            found.append(f"{declared_path} is not mounted exactly")
        for m in mounts:
            if inside(declared_path, m["mountPath"]):
                found.append(f"{m['mountPath']} is mounted over {declared_path}")
                if m.get("readOnly"):
                    found.append(f"{declared_path} lies inside the read-only {m['mountPath']}")
    return found


def violations(spec: Obj) -> list[str]:
    found = []
    for c in [*spec.get("initContainers", []), *spec.get("containers", [])]:
        image = declared().get(c["image"])
        if image is None:
            continue
        found += [f"{c['name']}: {v}" for v in mount_violations(c, image["volumes"])]
    return found


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_declared_volume_is_mounted_exactly(name: str) -> None:
    found = [f"{where}: {v}" for where, spec in pod_specs(overlay(name)) for v in violations(spec)]
    assert not found, "\n".join(found)


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_third_party_image_is_declared(name: str) -> None:
    """A new image is added to the table, or its VOLUMEs go unchecked."""
    images = {
        c["image"]
        for _, spec in pod_specs(overlay(name))
        for c in [*spec.get("initContainers", []), *spec["containers"]]
    }
    ours = {i for i in images if i.startswith("localhost/")}
    assert images - ours <= set(declared()), sorted(images - ours - set(declared()))


def test_the_table_describes_every_image() -> None:
    keys = {"user", "volumes", "entrypoint", "cmd", "workdir", "owned_paths", "source"}
    for image, fields in declared().items():
        assert keys <= set(fields), (image, sorted(keys - set(fields)))
        assert all(PurePosixPath(v).is_absolute() for v in fields["volumes"]), image
        assert fields["source"].startswith("https://"), image


def test_the_check_finds_what_it_should() -> None:
    """Kafka's data and config mounted on the parents of the image's VOLUMEs."""
    kafka = "docker.io/apache/kafka:4.1.1"
    spec = {
        "containers": [
            {
                "name": "kafka",
                "image": kafka,
                "volumeMounts": [
                    {"name": "data", "mountPath": "/var/lib/kafka"},
                    {"name": "config", "mountPath": "/etc/kafka", "readOnly": True},
                ],
            }
        ]
    }
    found = violations(spec)
    assert "kafka: /var/lib/kafka/data is not mounted exactly" in found
    assert "kafka: /var/lib/kafka is mounted over /var/lib/kafka/data" in found
    assert "kafka: /etc/kafka/secrets lies inside the read-only /etc/kafka" in found
    assert "kafka: /mnt/shared/config is not mounted exactly" in found
    exact = [
        {"name": n, "mountPath": p}
        for n, p in (
            ("a", "/var/lib/kafka/data"),
            ("b", "/etc/kafka/secrets"),
            ("c", "/mnt/shared/config"),
        )
    ]
    spec["containers"][0]["volumeMounts"] = [*exact, {"name": "d", "mountPath": "/etc/kafka/shop"}]
    assert violations(spec) == []
    spec["containers"][0]["image"] = "localhost/shop:dev"
    spec["containers"][0]["volumeMounts"] = []
    assert violations(spec) == []
