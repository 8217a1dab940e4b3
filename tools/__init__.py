"""Operator tools: the local launcher (`make run`), the demo seeder and the shop CLI."""
