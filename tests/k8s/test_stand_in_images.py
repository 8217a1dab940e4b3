"""The stand-in images' Containerfiles against what the official images declare.

The real-cluster check runs the manifests on images built here under the official names
(deploy/tooling/real_check/images.py); a stand-in with another USER, VOLUME, ENTRYPOINT, CMD or
WORKDIR would pass where the official image fails, or the reverse. The declarations are
deploy/k8s/real-check/images/declared.toml; this reads the Containerfiles' final stage (and
the local base it starts from), with no container engine.
"""

from __future__ import annotations

import json
import shlex
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from deploy.tooling.real_check.images import IMAGES, IMAGES_DIR, JRE, JRE_IMAGE, STAND_INS

DECLARED_TOML = IMAGES_DIR / "declared.toml"
# The local bases a stand-in may start from, and their folders (their settings are inherited).
LOCAL_BASES = {JRE: JRE_IMAGE.folder}
Config = dict[str, Any]


@cache
def declared() -> dict[str, Any]:
    with DECLARED_TOML.open("rb") as f:
        return tomllib.load(f)


def instructions(containerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined: list[str] = []
    pending = ""
    for raw in containerfile.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    pairs = []
    for line in joined:
        word, _, rest = line.partition(" ")
        pairs.append((word.upper(), rest.strip()))
    return pairs


def exec_form(argument: str) -> list[str]:
    """ENTRYPOINT/CMD: the JSON (exec) form, or the shell form as /bin/sh -c would get it."""
    if argument.startswith("["):
        return [str(part) for part in json.loads(argument)]
    return ["/bin/sh", "-c", argument]


def volumes(argument: str) -> list[str]:
    if argument.startswith("["):
        return [str(part) for part in json.loads(argument)]
    return shlex.split(argument)


def final_config(folder: str) -> Config:
    """USER, VOLUMEs, ENTRYPOINT, CMD, WORKDIR, STOPSIGNAL of the folder's image."""
    steps = instructions(IMAGES_DIR / folder / "Containerfile")
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    base = steps[last_from][1].split()[0]
    config: Config = (
        final_config(LOCAL_BASES[base])
        if base in LOCAL_BASES
        else {"user": "", "volumes": [], "entrypoint": [], "cmd": [], "workdir": "/"}
    )
    config = {**config, "volumes": list(config["volumes"])}
    for word, argument in steps[last_from + 1 :]:
        if word == "USER":
            config["user"] = argument
        elif word == "VOLUME":
            config["volumes"] += volumes(argument)
        elif word == "ENTRYPOINT":
            # As Docker: a new ENTRYPOINT resets the inherited CMD.
            config["entrypoint"], config["cmd"] = exec_form(argument), []
        elif word == "CMD":
            config["cmd"] = exec_form(argument)
        elif word == "WORKDIR":
            config["workdir"] = argument
        elif word == "STOPSIGNAL":
            config["stop_signal"] = argument
    return config


def test_every_stand_in_has_a_containerfile() -> None:
    for image in IMAGES:
        assert (IMAGES_DIR / image.folder / "Containerfile").is_file(), image.name
    assert len({image.archive for image in IMAGES}) == len(IMAGES)


def test_declared_toml_names_only_stand_ins() -> None:
    assert set(declared()) <= set(STAND_INS)


@pytest.mark.parametrize("image", IMAGES, ids=lambda image: image.folder)
def test_stand_in_declares_what_the_official_image_declares(image: Any) -> None:
    official = declared().get(image.name)
    if official is None:
        pytest.skip(f"{image.name} is not in declared.toml")
    ours = final_config(image.folder)
    assert ours["user"] == official["user"], "USER"
    assert sorted(ours["volumes"]) == sorted(official["volumes"]), "VOLUME"
    assert ours["entrypoint"] == official["entrypoint"], "ENTRYPOINT"
    assert ours["cmd"] == official["cmd"], "CMD"
    assert ours["workdir"].rstrip("/") == official.get("workdir", "/").rstrip("/"), "WORKDIR"
    if "stop_signal" in official:
        assert ours.get("stop_signal") == official["stop_signal"], "STOPSIGNAL"
