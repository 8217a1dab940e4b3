"""Inventory's PostgreSQL unit of work: its repositories on one connection, one transaction,
and the domain events it records published through the outbox on commit."""

from __future__ import annotations

from collections.abc import Callable

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from services.inventory.persistence.reservations import PostgresReservationRepository
from services.inventory.persistence.stock import PostgresStockRepository
from services.inventory.publishing import publication
from shared.messaging.unit_of_work import PostgresUnitOfWork


class PostgresInventoryUnitOfWork(PostgresUnitOfWork):
    stock: PostgresStockRepository
    reservations: PostgresReservationRepository

    def __init__(self, pool: asyncpg.Pool, *, read_only: bool = False) -> None:
        super().__init__(pool, read_only=read_only, publishing=publication)

    def bind(self, connection: PoolConnectionProxy) -> None:
        self.stock = PostgresStockRepository(connection)
        self.reservations = PostgresReservationRepository(connection)


def unit_of_work_factory(pool: asyncpg.Pool) -> Callable[[], PostgresInventoryUnitOfWork]:
    return lambda: PostgresInventoryUnitOfWork(pool)
