"""Which browser the tests drive: Debian's chromium, not one Playwright downloads
(`playwright install` needs a host this machine cannot reach)."""

from __future__ import annotations

import os
import shutil
from typing import Any

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")


def executable() -> str:
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError(
        "no chromium on PATH: `make browser-tools` installs Debian's (apt-get install chromium)"
    )


def launch_options() -> dict[str, Any]:
    # Chromium's own sandbox needs a user namespace that root in a container lacks.
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    return {"executable_path": executable(), "args": args, "headless": True}
