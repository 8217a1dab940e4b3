"""The top-level packages import downwards only, so each image carries just what it runs.

shared and services are the services' image; ops (the operator's tools) sits on them and
is the Jobs' image; devstack (a local stack and `make run`) uses ops; the image and cluster
tooling, the load generator and the demos use devstack; perf drives the load generator.
Nothing but the tests imports the tests. Every import counts, a function's own included.
"""

from __future__ import annotations

import ast

import pytest

from devstack.config import REPO_ROOT

# package -> the packages of the project it may import.
MAY_IMPORT: dict[str, frozenset[str]] = {
    "shared": frozenset(),
    "services": frozenset({"shared"}),
    "ops": frozenset({"shared", "services"}),
    "devstack": frozenset({"shared", "services", "ops"}),
    "deploy": frozenset({"shared", "services", "ops", "devstack"}),
    "loadgen": frozenset({"shared", "services", "ops", "devstack"}),
    "demos": frozenset({"shared", "services", "ops", "devstack"}),
    "perf": frozenset({"shared", "services", "ops", "devstack", "loadgen"}),
}
PROJECT = frozenset(MAY_IMPORT) | {"tests"}


def imported_packages(package: str) -> dict[str, set[str]]:
    """Each project package ``package`` imports -> the files that do."""
    found: dict[str, set[str]] = {}
    for path in sorted((REPO_ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in PROJECT and top != package:
                    found.setdefault(top, set()).add(str(path.relative_to(REPO_ROOT)))
    return found


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_a_package_imports_only_the_ones_below_it(package: str) -> None:
    upward = {
        top: sorted(files)
        for top, files in imported_packages(package).items()
        if top not in MAY_IMPORT[package]
    }
    assert upward == {}, f"{package} imports {upward}"


def test_the_layers_hold_no_loop() -> None:
    for package, allowed in MAY_IMPORT.items():
        for lower in allowed:
            assert package not in MAY_IMPORT[lower], (package, lower)


def test_every_top_level_package_has_a_layer() -> None:
    packages = {
        path.parent.name
        for path in REPO_ROOT.glob("*/__init__.py")
        if path.parent.name not in {"tests", "gen"}
    }
    assert packages <= set(MAY_IMPORT), sorted(packages - set(MAY_IMPORT))
    assert not (REPO_ROOT / "tools").exists()


def test_every_package_exists() -> None:
    assert all((REPO_ROOT / package).is_dir() for package in MAY_IMPORT)


def test_outside_tests_nothing_imports_them() -> None:
    # Already implied by MAY_IMPORT; said on its own, as it is why loadgen left tests/.
    for package in MAY_IMPORT:
        assert "tests" not in imported_packages(package), package
