"""Every top-level package is under the import contracts (`make lint-imports`, its
contracts in pyproject.toml): a package import-linter is not told about is one whose
imports nobody checks. The layers themselves are import-linter's to enforce."""

from __future__ import annotations

import tomllib

from devstack.config import REPO_ROOT

CONFIG = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]


def _packages() -> set[str]:
    return {path.parent.name for path in REPO_ROOT.glob("*/__init__.py")} - {"gen"}


def test_every_top_level_package_is_a_root_of_the_import_contracts() -> None:
    assert _packages() == set(CONFIG["root_packages"])
    assert not (REPO_ROOT / "tools").exists()


def test_every_package_but_the_tests_has_a_layer() -> None:
    (apps,) = [c for c in CONFIG["contracts"] if c["id"] == "apps-layered"]
    layered = {name.strip("() ") for layer in apps["layers"] for name in layer.split(":")}
    assert _packages() - {"tests"} == layered


def test_nothing_but_the_tests_imports_the_tests() -> None:
    (contract,) = [c for c in CONFIG["contracts"] if c["id"] == "nothing-imports-tests"]
    assert set(contract["source_modules"]) == _packages() - {"tests"}
    assert contract["forbidden_modules"] == ["tests"] and "ignore_imports" not in contract
