"""Secrets kept in files of a stack: made once, never changed, readable by their owner only."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def private_dir(directory: Path) -> None:
    """The folder, 0700."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)


def ensure_secret_file(path: Path, make: Callable[[], str]) -> None:
    """``path`` holds ``make()``'s value if it was missing (0600); an existing one stays.
    O_EXCL: two processes making it at once keep the first one's secret."""
    if not path.exists():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(make())
    os.chmod(path, 0o600)
