"""product: the catalog. SKU, title, price, status; only admins write."""
