"""The in-memory unit of work every service's unit tests build their fake on.

A service's fake subclasses it and adds in-memory repositories (plain attributes).
It behaves as the PostgreSQL one does where a use case can tell: changes and
recorded events survive only a block that ends without an exception (the
repositories are restored from a snapshot otherwise), and recorded events are
published, through the service's own publishing map, only on commit.
"""

from __future__ import annotations

import copy
from types import TracebackType
from typing import Any, Self

from shared.messaging.envelope import topic_of
from shared.messaging.unit_of_work import Publication, Publishing


class FakeUnitOfWork:
    # The attributes that hold state, snapshotted on entry and restored on rollback.
    REPOSITORIES: tuple[str, ...] = ()

    def __init__(self, publishing: Publishing | None = None) -> None:
        self._publishing = publishing
        self._staged: list[tuple[str, Publication]] = []
        self._snapshot: dict[str, Any] | None = None
        self.published: list[tuple[str, Publication]] = []  # (topic, publication), committed
        self.commits = 0
        self.rollbacks = 0

    def record(self, *events: object) -> None:
        if self._snapshot is None:
            raise RuntimeError("unit of work used outside 'async with'")
        if self._publishing is None:
            raise RuntimeError("this unit of work has no publishing map")
        for event in events:
            publication = self._publishing(event)
            topic = topic_of(type(publication.message))
            if topic is None:
                raise TypeError(f"{type(publication.message).__name__} is not an event message")
            self._staged.append((topic, publication))

    @property
    def messages(self) -> list[Any]:
        """The published event messages, in order."""
        return [publication.message for _, publication in self.published]

    async def __aenter__(self) -> Self:
        self._snapshot = {name: copy.deepcopy(getattr(self, name)) for name in self.REPOSITORIES}
        self._staged = []
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._snapshot is not None
        if exc_type is None:
            self.published.extend(self._staged)
            self.commits += 1
        else:
            for name, state in self._snapshot.items():
                setattr(self, name, state)
            self.rollbacks += 1
        self._staged = []
        self._snapshot = None
