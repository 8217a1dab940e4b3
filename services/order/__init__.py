"""order: orders and their items, priced from the catalog, and the order saga's state."""
