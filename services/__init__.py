"""The five services; each folder reads the same way (see README)."""
