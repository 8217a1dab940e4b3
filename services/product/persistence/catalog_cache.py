"""The catalog in memory for the read path (GetProduct, BatchGetProducts), kept correct
by PostgreSQL's own change notifications.

A products trigger sends ``NOTIFY product_changed, '<product id>'`` with every insert,
update and delete; every instance listens, and drops that product when told. This
instance's own writes drop theirs at commit too (``PostgresProductUnitOfWork.committed``),
so a caller reads its own write from the instance it wrote through.

**Why a read that raced a write cannot leave a stale entry.** A reader takes a ticket
(the cache's epoch) before it reads the row, and fills the cache with what it read
only if no invalidation came in between (``fill`` compares the epoch). Two orders are
possible for a write that commits while the read is in flight: its notification
arrives before the fill (the epoch moved: the fill is refused) or after it (the
invalidation removes what the fill stored). PostgreSQL sends a notification only after
its transaction committed, so a read that starts after that sees the new row.

**Only while listening.** A notification missed is a stale entry forever, so the cache
serves nothing until LISTEN is in place, and it empties and goes dark the moment the
listening connection is lost (or fails its periodic check); it comes back empty once
listening again. Entries also expire after ``max_age`` seconds, a bound on what any
fault not foreseen here could leave behind.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import Callable

from services.product.domain import Product
from shared.db.listener import Listener

CHANNEL = "product_changed"
CHECK_SECONDS = 2.0  # how often the listening connection proves it is alive
LISTENER_NAME = "product catalog listener"  # pg_stat_activity's application_name


class CatalogCache:
    """Products by id, least recently used evicted past ``capacity``. Pure: no I/O."""

    def __init__(
        self, capacity: int, max_age: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if capacity < 1 or max_age <= 0:
            raise ValueError("capacity and max_age must be positive")
        self._capacity = capacity
        self._max_age = max_age
        self._clock = clock
        self._entries: OrderedDict[uuid.UUID, tuple[Product, float]] = OrderedDict()
        self._epoch = 0
        self._live = False

    @property
    def live(self) -> bool:
        return self._live

    def __len__(self) -> int:
        return len(self._entries)

    def ticket(self) -> int:
        """Take before reading from the database; hand to ``fill`` with what was read."""
        return self._epoch

    def get(self, product_id: uuid.UUID) -> Product | None:
        entry = self._entries.get(product_id) if self._live else None
        if entry is None or self._clock() - entry[1] > self._max_age:
            if entry is not None:
                del self._entries[product_id]
            return None
        self._entries.move_to_end(product_id)
        return entry[0]

    def fill(self, product: Product, ticket: int) -> bool:
        """Stores ``product`` unless an invalidation came after ``ticket`` was taken."""
        if not self._live or ticket != self._epoch:
            return False
        self._entries[product.product_id] = (product, self._clock())
        self._entries.move_to_end(product.product_id)
        while len(self._entries) > self._capacity:
            self._entries.popitem(last=False)
        return True

    def invalidate(self, product_id: uuid.UUID) -> None:
        self._epoch += 1
        self._entries.pop(product_id, None)

    def invalidate_all(self) -> None:
        self._epoch += 1
        self._entries.clear()

    def go_live(self) -> None:
        """Listening: from now on every change is heard, so entries may be kept."""
        self.invalidate_all()
        self._live = True

    def go_dark(self) -> None:
        """Not listening: a change may go unheard, so nothing is kept or served."""
        self._live = False
        self.invalidate_all()


def catalog_listener(dsn: str, cache: CatalogCache) -> Listener:
    """The connection that keeps ``cache`` in step with every instance's writes."""

    def changed(payload: str) -> None:
        try:
            cache.invalidate(uuid.UUID(payload))
        except ValueError:  # not one product (a TRUNCATE, a bulk change by hand): all of them
            cache.invalidate_all()

    return Listener(
        dsn,
        CHANNEL,
        changed,
        name=LISTENER_NAME,
        on_listening=cache.go_live,
        on_lost=cache.go_dark,
        check_seconds=CHECK_SECONDS,
    )
