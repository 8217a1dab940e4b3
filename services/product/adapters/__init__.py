"""What only the product service talks to: the catalog cache kept by PostgreSQL's notifications."""
