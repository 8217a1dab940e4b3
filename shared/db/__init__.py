"""PostgreSQL access through asyncpg: pools, migrations, units of work."""
