"""Inventory's persistence on PostgreSQL: a repository per aggregate (stock, reservations)
and the unit of work that holds them."""

from services.inventory.persistence.unit_of_work import (
    PostgresInventoryUnitOfWork,
    unit_of_work_factory,
)

__all__ = ["PostgresInventoryUnitOfWork", "unit_of_work_factory"]
