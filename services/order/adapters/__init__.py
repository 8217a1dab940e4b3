"""What only the order service talks to: the product catalog, its watchers, the saga timeout."""
