"""The manual's links lead somewhere, and its tested blocks name tests that read them.

Every relative link in README.md, BENCHMARKS.md, deploy/k8s/README.md and the pages under
docs/ must name a file or folder that exists and, when it names a heading of a Markdown
file, a heading that file has (GitHub's anchors). A marker comment that says a test runs
the block below it must name a test that exists and reads that page, so a block moved to
another page without its test fails here, in seconds, not in an end-to-end run.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from devstack.config import REPO_ROOT

PAGES = sorted(
    [
        REPO_ROOT / "README.md",
        REPO_ROOT / "BENCHMARKS.md",
        REPO_ROOT / "deploy" / "k8s" / "README.md",
        *(REPO_ROOT / "docs").rglob("*.md"),
    ]
)
FENCE = re.compile(r"^(```|~~~)")
# [text](target) or [text](target "title"); the text may span lines. Images too.
LINK = re.compile(r"\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
MARKER = re.compile(r"<!--.*?(tests/[\w/]+\.py).*?-->", re.DOTALL)


def prose(text: str) -> str:
    """The text outside fenced code blocks (their lines blanked, so line numbers hold)."""
    out, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.lstrip()):
            fenced = not fenced
            out.append("")
        else:
            out.append("" if fenced else line)
    return "\n".join(out)


def fenced_blocks(page: Path) -> list[str]:
    blocks: list[str] = []
    current: list[str] | None = None
    for line in page.read_text().splitlines():
        if FENCE.match(line.lstrip()):
            if current is None:
                current = []
            else:
                blocks.append("\n".join(current))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: link targets and markup dropped, punctuation too."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: Counter[str] = Counter()
    found = set()
    for line in prose(page.read_text()).splitlines():
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        found.add(base if seen[base] == 0 else f"{base}-{seen[base]}")
        seen[base] += 1
    return found


def relative_links(page: Path) -> list[str]:
    text = re.sub(r"`[^`\n]*`", "", prose(page.read_text()))  # inline code is not a link
    return [t for t in LINK.findall(text) if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]


def test_the_pages_are_found() -> None:
    names = {p.relative_to(REPO_ROOT).as_posix() for p in PAGES}
    assert {"README.md", "docs/architecture.md", "docs/decisions/real-cluster.md"} <= names


def test_anchors_follow_githubs_rules() -> None:
    assert slug("Trust boundaries: etcd, Kafka and PostgreSQL") == (
        "trust-boundaries-etcd-kafka-and-postgresql"
    )
    assert slug("Proven on a real node here (`make k8s-real-check`)") == (
        "proven-on-a-real-node-here-make-k8s-real-check"
    )
    assert slug("Where the saga's time goes, and why P2 and P3 are not met here") == (
        "where-the-sagas-time-goes-and-why-p2-and-p3-are-not-met-here"
    )


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading #{anchor} in {resolved.name}")
    assert not broken, f"{page.relative_to(REPO_ROOT)}: " + "; ".join(broken)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_a_tested_block_names_a_test_that_reads_its_page(page: Path) -> None:
    for test in MARKER.findall(page.read_text()):
        source = REPO_ROOT / test
        assert source.is_file(), f"{page.name} names {test}, which does not exist"
        assert f'"{page.name}"' in source.read_text(), f"{test} does not read {page.name}"


def test_the_readme_draws_the_architecture_pages_diagram() -> None:
    """The landing page and the architecture page show one diagram, not two versions."""

    def diagram(page: Path) -> str:
        [found] = [b for b in fenced_blocks(page) if "register /services/<name>/<id>" in b]
        return found

    assert diagram(REPO_ROOT / "README.md") == diagram(REPO_ROOT / "docs" / "architecture.md")


# A repository path in backticks in prose: `services/order/use_cases.py`, `shared/rpc/`,
# `ops/trust/rights.py`, possibly followed by a symbol (`path` `Name`) that is not checked.
CODE_PATH = re.compile(
    r"`((?:services|shared|gateway|tools|devstack|deploy|pki|tests|protos|docs|ops|perf|demos|loadgen)"
    r"/[\w./-]*)(?:[:#][^`]*)?`"
)


def code_path_exists(path: str) -> bool:
    """A file or folder; or `dir/module.Symbol`: a module that defines that name."""
    if (REPO_ROOT / path.rstrip("/")).exists():
        return True
    module, _, symbol = path.rpartition(".")
    source = REPO_ROOT / f"{module}.py"
    if not symbol.isidentifier() or not source.is_file():
        return False
    return (
        re.search(
            rf"^\s*(?:async def|def|class) {symbol}\b|^{symbol}\b.*=", source.read_text(), re.M
        )
        is not None
    )


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_code_path_the_prose_names_exists(page: Path) -> None:
    missing = [
        path
        for path in CODE_PATH.findall(prose(page.read_text()))
        if "<" not in path and "*" not in path and not code_path_exists(path)
    ]
    assert not missing, f"{page.relative_to(REPO_ROOT)} names paths that do not exist: {missing}"
