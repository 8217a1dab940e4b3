"""Every service folder has the same shape (docs/architecture.md), so knowing one is
knowing all five; and no module of the services, the gateway or the kit outgrows a reading."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SERVICES = ("user", "product", "order", "inventory", "payment")
# Every service has these; persistence may be a package when one module would be too long.
REQUIRED = {"__init__.py", "domain.py", "use_cases.py", "grpc_api.py", "settings.py", "main.py"}
REQUIRED_DIRS = {"migrations"}
# What a service has only if it needs it: events it consumes or publishes, the
# config-center document it reads live (knobs.py, beside settings.py's environment),
# and the ports when use_cases.py would be too long with them.
OPTIONAL = {"subscriptions.py", "publishing.py", "knobs.py", "ports.py"}
OPTIONAL_DIRS = {"adapters", "persistence"}
MAX_LINES = 350


def _entries(folder: Path) -> tuple[set[str], set[str]]:
    files = {p.name for p in folder.iterdir() if p.is_file()}
    dirs = {p.name for p in folder.iterdir() if p.is_dir() and p.name != "__pycache__"}
    return files, dirs


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_folder_has_the_one_shape(service: str) -> None:
    files, dirs = _entries(REPO / "services" / service)
    assert files >= REQUIRED, f"{service} lacks {sorted(REQUIRED - files)}"
    assert dirs >= REQUIRED_DIRS, f"{service} lacks {sorted(REQUIRED_DIRS - dirs)}"
    assert ("persistence.py" in files) != ("persistence" in dirs), (
        f"{service} needs exactly one of persistence.py and persistence/"
    )
    unknown = files - REQUIRED - OPTIONAL - {"persistence.py"}
    assert not unknown, f"{service} has modules outside the shape: {sorted(unknown)}"
    stray = dirs - REQUIRED_DIRS - OPTIONAL_DIRS
    assert not stray, f"{service} has folders outside the shape: {sorted(stray)}"


def test_publishing_and_subscriptions_come_with_events() -> None:
    # A service that publishes records domain events; one that consumes lists its
    # subscriptions. The saga's three do both; user and product neither.
    for service in SERVICES:
        files, _ = _entries(REPO / "services" / service)
        saga = service in {"order", "inventory", "payment"}
        assert ("publishing.py" in files) == saga, service
        assert ("subscriptions.py" in files) == saga, service


@pytest.mark.parametrize("tree", ["services", "shared", "gateway"])
def test_no_module_is_over_the_limit(tree: str) -> None:
    long = {
        str(path.relative_to(REPO)): lines
        for path in (REPO / tree).rglob("*.py")
        if (lines := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"
