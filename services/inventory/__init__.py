"""inventory: stock per SKU (available, reserved, sold) and its received-goods ledger."""
